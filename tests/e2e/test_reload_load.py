"""Reload under load: the real daemon re-reads its file while a bounded request loop runs.

Adds a backend server, changes a weight and removes a frontend in one reload
(SIGHUP), with zero failed requests, an established connection on the
removed frontend still served, and the operator's admin state kept.
"""
from __future__ import annotations

import csv
import http.client
import shutil
import signal
import socket
import tempfile
import time
from typing import Iterator

import pytest

from lbd.testing import Apache, LbdProcess, free_port
from tests.e2e.test_admin_socat import BODY, Load, get, server_line, socat

pytestmark = [
    pytest.mark.skipif(not Apache.available(), reason="apache2 is not installed"),
    pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed"),
]


def config(workdir: str, www: int, old: int | None, servers: str, mode: str = "tcp") -> str:
    old_frontend = '[frontends.old]\nbind = "127.0.0.1:%d"\ndefault_backend = "web"\n' % old if old else ""
    return """\
[global]
grace = "3s"
[log]
access = "off"
[admin]
socket = "%s/admin.sock"
[metrics]
bind = "off"
[defaults]
mode = "%s"
[defaults.timeout]
connect = "1s"
[frontends.www]
bind = "127.0.0.1:%d"
default_backend = "web"
%s
[backends.web.servers]
%s""" % (workdir, mode, www, old_frontend, servers)


@pytest.fixture
def apaches() -> Iterator[list[Apache]]:
    servers = [Apache(BODY[i].decode()) for i in (1, 2, 3)]
    for a in servers:
        a.start()
    yield servers
    for a in servers:
        a.stop()


def _servers(apaches: list[Apache], count: int, web1_weight: int = 1) -> str:
    lines = ['web1 = { address = "127.0.0.1:%d", weight = %d }\n' % (apaches[0].port, web1_weight)]
    for i in range(1, count):
        lines.append('web%d = { address = "127.0.0.1:%d" }\n' % (i + 1, apaches[i].port))
    return "".join(lines)


def _stat(workdir: str, server: str) -> dict[str, str]:
    """One server's row of show stat (backend web), read with the csv module."""
    lines = socat(workdir, "show stat").splitlines()
    header = lines[0][2:].split(",")
    for values in csv.reader(lines[1:]):
        row = dict(zip(header, values))
        if row.get("pxname") == "web" and row.get("svname") == server:
            return row
    raise AssertionError("no row for web/%s" % server)


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


@pytest.mark.parametrize("mode", ["tcp", "http"])
def test_reload_under_load(apaches: list[Apache], mode: str) -> None:
    """Adding a server, changing a weight and removing a frontend under load fails no request."""
    workdir = tempfile.mkdtemp(prefix="lbd-reload-e2e-")
    www, old = free_port(), free_port()
    proc = LbdProcess(config(workdir, www, old, _servers(apaches, 2), mode), workdir=workdir)
    try:
        assert {get(www) for _ in range(4)} == {BODY[1], BODY[2]}
        # Operator state before the reload: web2 drains.
        assert socat(workdir, "set server web/web2 state drain") == "\n"
        web2_total = _stat(workdir, "web2")["stot"]
        assert web2_total == "2"
        held = http.client.HTTPConnection("127.0.0.1", old, timeout=10)
        held.request("GET", "/")
        assert held.getresponse().read() == BODY[1]

        load = Load(www)
        try:
            load.wait_for(30)
            proc.write_config(config(workdir, www, None, _servers(apaches, 3, web1_weight=2), mode))
            proc.signal(signal.SIGHUP)
            proc.wait_for_log("reload done")
            reloaded_at = time.monotonic()
            load.wait_for(len(load.results) + 60)
        finally:
            load.stop()

        assert load.failures == []
        after = load.after(reloaded_at)
        assert BODY[3] in after                       # the new server takes traffic
        assert BODY[2] not in after                   # web2 is still draining
        assert server_line(workdir, "web2")[6] == "8"
        assert _stat(workdir, "web2")["stot"] == web2_total     # an unchanged server keeps its counters
        assert _stat(workdir, "web2")["status"] == "DRAIN"
        assert socat(workdir, "get weight web/web1") == "2 (initial 2)\n\n"
        assert _refused(old)                          # the removed frontend no longer listens
        if mode == "tcp":
            held.request("GET", "/")                  # ... but its established connection still works
            assert held.getresponse().read() == BODY[1]
        else:
            assert held.sock is not None              # http: the idle connection is closed cleanly
            held.sock.settimeout(10)
            assert held.sock.recv(1) == b""
        held.close()
        log = proc.log()
        for line in ("reload: frontend old removed (no longer listening; its connections finish)",
                     "reload: server web/web1 updated", "reload: server web/web3 added"):
            assert line in log
    finally:
        assert proc.stop() == 0


def test_invalid_reload_keeps_serving(apaches: list[Apache]) -> None:
    """An invalid file changes nothing: the admin 'reload' answers the errors, traffic goes on."""
    workdir = tempfile.mkdtemp(prefix="lbd-reload-bad-")
    www = free_port()
    proc = LbdProcess(config(workdir, www, None, _servers(apaches, 2)), workdir=workdir)
    try:
        load = Load(www)
        try:
            load.wait_for(10)
            proc.write_config(config(workdir, www, None, _servers(apaches, 2) + "web9 = { weight = 3 }\n"))
            answer = socat(workdir, "reload")
            load.wait_for(len(load.results) + 20)
        finally:
            load.stop()
        assert answer == ("Success=0\n%s/lbd.toml:20: backends.web.servers.web9: a server needs an address "
                          "(\"HOST:PORT\")\n\n" % workdir)
        assert load.failures == []
        assert {body for _, body in load.results[-20:]} == {BODY[1], BODY[2]}
        mark = len(proc.log())
        proc.signal(signal.SIGHUP)
        proc.wait_for_log("reload failed (1 error(s)): still running the previous configuration", after=mark)
        assert proc.proc.poll() is None               # SIGHUP did not kill it
    finally:
        assert proc.stop() == 0


def test_reload_command_applies(apaches: list[Apache]) -> None:
    """'reload' on the admin socket applies a valid file and answers Success=1."""
    workdir = tempfile.mkdtemp(prefix="lbd-reload-cmd-")
    www = free_port()
    proc = LbdProcess(config(workdir, www, None, _servers(apaches, 1)), workdir=workdir)
    try:
        assert {get(www) for _ in range(3)} == {BODY[1]}
        proc.write_config(config(workdir, www, None, _servers(apaches, 3)))
        assert socat(workdir, "reload") == "Success=1\n\n"
        assert {get(www) for _ in range(6)} == {BODY[1], BODY[2], BODY[3]}
    finally:
        assert proc.stop() == 0


def test_reload_to_http_mode(apaches: list[Apache]) -> None:
    """A frontend switched from tcp to http mode by a reload serves HTTP on the same socket."""
    workdir = tempfile.mkdtemp(prefix="lbd-reload-mode-")
    www = free_port()
    proc = LbdProcess(config(workdir, www, None, _servers(apaches, 1)), workdir=workdir)
    try:
        assert get(www) == BODY[1]
        proc.write_config(config(workdir, www, None, _servers(apaches, 1), mode="http"))
        assert socat(workdir, "reload") == "Success=1\n\n"
        conn = http.client.HTTPConnection("127.0.0.1", www, timeout=10)
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.read() == BODY[1]
        conn.close()
        # Only the http relay adds X-Forwarded-For (Apache logs it last on each line);
        # Apache writes its log line after sending the response, so wait for it.
        deadline = time.monotonic() + 10
        while True:
            last = apaches[0].access_log().splitlines()[-1]
            if last.endswith('"127.0.0.1"') or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert last.endswith('"127.0.0.1"'), last
        assert "reload: frontend www updated" in proc.log()
    finally:
        assert proc.stop() == 0
