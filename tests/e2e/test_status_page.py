"""The status page in a real headless browser (Debian's chromium), served by the real daemon."""
from __future__ import annotations

import html.parser
import importlib.util
import os
import shutil
import struct
import subprocess
import tempfile
import time
import urllib.request
from typing import Iterator

import pytest

from lbd.admin.client import query as admin_query
from lbd.testing import Apache, LbdProcess, free_port, wait_for_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HAS_CHECKS = importlib.util.find_spec("lbd.health.checker") is not None

pytestmark = [
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="chromium is not installed"),
    pytest.mark.skipif(not Apache.available(), reason="apache2 is not installed"),
]


def config(workdir: str, port: int, tcp_port: int, metrics_port: int, servers: dict[str, int]) -> str:
    lines = "".join('%s = { address = "127.0.0.1:%d" }\n' % (n, p) for n, p in servers.items())
    return """\
[log]
access = "off"
[admin]
socket = "%s/admin.sock"
level = "admin"
[metrics]
bind = "127.0.0.1:%d"
[defaults]
mode = "http"
[defaults.timeout]
connect = "1s"
check = "500ms"
[frontends.www]
bind = "127.0.0.1:%d"
default_backend = "web"
[frontends.db]
bind = "127.0.0.1:%d"
mode = "tcp"
default_backend = "static"
[backends.web.health]
type = "tcp"
interval = "300ms"
fastinter = "200ms"
downinter = "300ms"
rise = 1
fall = 2
[backends.web.servers]
%s
[backends.static]
mode = "tcp"
[backends.static.servers]
plain = { address = "127.0.0.1:%d", check = false }
""" % (workdir, metrics_port, port, tcp_port, lines, servers["web1"])


class Rows(html.parser.HTMLParser):
    """Collects the status page's server rows and frontend rows from a DOM dump."""

    def __init__(self) -> None:
        super().__init__()
        self.servers: dict[tuple[str, str], str] = {}
        self.frontends: list[str] = []
        self.backend = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and a.get("data-backend"):
            self.backend = a["data-backend"] or ""
        if tag == "tr" and a.get("class") == "server":
            self.servers[(self.backend, a.get("data-server") or "")] = a.get("data-state") or ""
        if tag == "tr" and a.get("data-frontend"):
            self.frontends.append(a["data-frontend"] or "")


def png_size(path: str) -> tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", head[:8]
    return struct.unpack(">II", head[16:24])


def browse(url: str, workdir: str, screenshot: str, size: str = "1280,900") -> str:
    """Load ``url`` in headless chromium: save a screenshot, return the DOM after load."""
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--user-data-dir=" + os.path.join(workdir, "chromium-profile"), "--window-size=" + size,
         "--screenshot=" + screenshot, "--dump-dom", url],
        capture_output=True, timeout=90, cwd=workdir,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    return proc.stdout.decode("utf-8", "replace")


class Stack:
    def __init__(self) -> None:
        self.workdir = tempfile.mkdtemp(prefix="lbd-status-e2e-")
        os.chmod(self.workdir, 0o755)     # apache2 runs as www-data when we are root
        self.apaches = [Apache(text, root=os.path.join(self.workdir, "apache%d" % i))
                        for i, text in enumerate(("one\n", "two\n", "three\n"))]
        for a in self.apaches:
            a.start()
        self.port, self.tcp_port, self.metrics_port = free_port(), free_port(), free_port()
        self.dead_port = free_port()    # nothing listens here
        servers = {"web1": self.apaches[0].port, "web2": self.apaches[1].port, "web3": self.apaches[2].port,
                   "dead": self.dead_port}
        self.lbd = LbdProcess(config(self.workdir, self.port, self.tcp_port, self.metrics_port, servers),
                              workdir=self.workdir)
        wait_for_port(self.metrics_port)

    def admin(self, line: str) -> str:
        return admin_query(os.path.join(self.workdir, "admin.sock"), line)

    def url(self, path: str = "/") -> str:
        return "http://127.0.0.1:%d%s" % (self.metrics_port, path)

    def close(self) -> None:
        self.lbd.stop()
        for a in self.apaches:
            a.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture
def stack() -> Iterator[Stack]:
    s = Stack()
    yield s
    s.close()


def test_page_shows_servers_and_states(stack: Stack) -> None:
    """Chromium renders the page: the DOM lists every server with its state; a screenshot is taken."""
    stack.admin("set server web/web2 state maint")
    stack.admin("set server web/web3 state drain")
    for _ in range(5):
        urllib.request.urlopen("http://127.0.0.1:%d/" % stack.port, timeout=10).read()
    shot = os.path.join(stack.workdir, "status.png")
    dom = browse(stack.url(), stack.workdir, shot)
    rows = Rows()
    rows.feed(dom)
    assert rows.frontends == ["www", "db"]
    assert rows.servers[("web", "web2")] == "MAINT"
    assert rows.servers[("web", "web3")] == "DRAIN"
    assert rows.servers[("static", "plain")] == "no check"
    assert rows.servers[("web", "web1")].startswith("UP")     # "UP 1/2" while a check fails
    assert sorted(rows.servers) == [("static", "plain"), ("web", "dead"), ("web", "web1"), ("web", "web2"),
                                    ("web", "web3")]
    assert png_size(shot) == (1280, 900)
    assert os.path.getsize(shot) > 10000


@pytest.mark.skipif(not HAS_CHECKS, reason="health checks (lbd/health/checker.py) have not landed yet")
def test_page_shows_down_server(stack: Stack) -> None:
    """A server nothing listens for is DOWN on the page, with its failed check, in the browser."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        body = urllib.request.urlopen(stack.url("/metrics"), timeout=10).read()
        if b'lbd_server_status{proxy="web",server="dead",state="DOWN"} 1.0' in body:
            break
        time.sleep(0.2)
    dom = browse(stack.url(), stack.workdir, os.path.join(stack.workdir, "down.png"))
    rows = Rows()
    rows.feed(dom)
    assert rows.servers[("web", "dead")] == "DOWN"
    assert "L4CON" in dom


def test_page_on_a_phone(stack: Stack) -> None:
    """At a phone's width the page renders, with the viewport set and every server present."""
    shot = os.path.join(stack.workdir, "phone.png")
    dom = browse(stack.url(), stack.workdir, shot, size="390,844")
    rows = Rows()
    rows.feed(dom)
    assert len(rows.servers) == 5
    assert '<meta name="viewport" content="width=device-width,initial-scale=1">' in dom
    assert png_size(shot) == (390, 844)


def test_page_refreshes_itself(stack: Stack) -> None:
    """The page the browser loaded asks to be reloaded every 5 seconds."""
    dom = browse(stack.url(), stack.workdir, os.path.join(stack.workdir, "r.png"))
    assert '<meta http-equiv="refresh" content="5">' in dom
