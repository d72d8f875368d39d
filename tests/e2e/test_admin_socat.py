"""The admin socket end to end, as operators use it: socat and lbctl against the real daemon.

Real lbd under twistd, real Apaches behind a tcp-mode frontend, commands
sent with ``echo "..." | socat stdio UNIX-CONNECT:...``.
"""
from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Iterator

import pytest

from lbd.testing import Apache, LbdProcess, free_port, lbd_env

pytestmark = [
    pytest.mark.skipif(not Apache.available(), reason="apache2 is not installed"),
    pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed"),
]

BODY = {1: b"Server 1 here\n", 2: b"Server 2 here\n", 3: b"Server 3 here\n"}


def config(workdir: str, port: int, servers: dict[str, int], state_file: bool = False, mode: str = "tcp") -> str:
    lines = "".join('%s = { address = "127.0.0.1:%d" }\n' % (n, p) for n, p in servers.items())
    return """\
[global]
grace = "3s"
%s
[log]
access = "off"
[admin]
socket = "%s/admin.sock"
mode = "600"
level = "admin"
[metrics]
bind = "off"
[defaults]
mode = "%s"
[defaults.timeout]
connect = "1s"
[frontends.www]
bind = "127.0.0.1:%d"
default_backend = "web"
[backends.web.servers]
%s""" % ('state_file = "%s/state.json"' % workdir if state_file else "", workdir, mode, port, lines)


def socat(workdir: str, line: str, timeout: float = 10.0) -> str:
    """``echo LINE | socat stdio UNIX-CONNECT:admin.sock``, as a script would."""
    proc = subprocess.run(["socat", "stdio", "UNIX-CONNECT:%s/admin.sock" % workdir],
                          input=(line + "\n").encode(), capture_output=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


def lbctl(workdir: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from lbd.cli import run_lbctl; run_lbctl()",
                           "-s", "%s/admin.sock" % workdir, *args],
                          capture_output=True, text=True, env=lbd_env(), timeout=30)


def get(port: int) -> bytes:
    with urllib.request.urlopen("http://127.0.0.1:%d/" % port, timeout=10) as r:
        return r.read()


def server_line(workdir: str, server: str) -> list[str]:
    """The ``show servers state`` fields of one server of backend web."""
    for line in socat(workdir, "show servers state web").splitlines()[2:]:
        fields = line.split()
        if len(fields) > 3 and fields[3] == server:
            return fields
    raise AssertionError("%s not in show servers state" % server)


class Load:
    """A bounded request loop in a thread: at most ``limit`` requests or ``seconds``."""

    def __init__(self, port: int, limit: int = 2000, seconds: float = 20.0) -> None:
        self.port = port
        self.limit = limit
        self.deadline = time.monotonic() + seconds
        self.results: list[tuple[float, bytes]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.results) + len(self.failures) < self.limit \
                and time.monotonic() < self.deadline:
            start = time.monotonic()
            try:
                self.results.append((start, get(self.port)))
            except Exception as e:  # every failure is counted, none expected
                self.failures.append(repr(e))

    def wait_for(self, n: int, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while len(self.results) < n and time.monotonic() < end:
            time.sleep(0.01)
        assert len(self.results) >= n, "only %d requests in %ss" % (len(self.results), timeout)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def after(self, t: float) -> list[bytes]:
        return [body for start, body in self.results if start > t]


@pytest.fixture
def apaches() -> Iterator[list[Apache]]:
    servers = [Apache(BODY[1].decode()), Apache(BODY[2].decode())]
    for a in servers:
        a.start()
    yield servers
    for a in servers:
        a.stop()


@pytest.fixture
def lbd(apaches: list[Apache]) -> Iterator[tuple[LbdProcess, str, int]]:
    workdir = tempfile.mkdtemp(prefix="lbd-admin-e2e-")
    port = free_port()
    proc = LbdProcess(config(workdir, port, {"web1": apaches[0].port, "web2": apaches[1].port}),
                      workdir=workdir)
    yield proc, workdir, port
    assert proc.stop() == 0


def _keepalive_on(port: int, body: bytes) -> http.client.HTTPConnection:
    """A keep-alive connection through lbd that landed on the server answering ``body``."""
    for _ in range(10):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/")
        if conn.getresponse().read() == body:
            return conn
        conn.close()
    raise AssertionError("no connection reached %r" % body)


def test_disable_under_traffic(lbd: tuple[LbdProcess, str, int]) -> None:
    """disable server under load: no request fails, new ones avoid it, its open connection still works."""
    proc, workdir, port = lbd
    held = _keepalive_on(port, BODY[1])
    load = Load(port)
    try:
        load.wait_for(20)
        assert socat(workdir, "disable server web/web1") == "\n"
        disabled_at = time.monotonic()
        load.wait_for(len(load.results) + 40)
    finally:
        load.stop()
    assert load.failures == []
    after = load.after(disabled_at)
    assert after and set(after) == {BODY[2]}
    held.request("GET", "/")                   # the connection opened before is not cut
    assert held.getresponse().read() == BODY[1]
    held.close()
    assert server_line(workdir, "web1")[6] == "1"          # srv_admin_state: SRV_ADMF_FMAINT
    assert socat(workdir, "enable server web/web1") == "\n"
    assert {get(port) for _ in range(4)} == {BODY[1], BODY[2]}


def test_disable_under_http_traffic(apaches: list[Apache]) -> None:
    """In http mode, disable server under load fails no request and later requests avoid it."""
    workdir = tempfile.mkdtemp(prefix="lbd-admin-http-")
    port = free_port()
    proc = LbdProcess(config(workdir, port, {"web1": apaches[0].port, "web2": apaches[1].port}, mode="http"),
                      workdir=workdir)
    try:
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        load = Load(port)
        try:
            load.wait_for(20)
            assert socat(workdir, "disable server web/web1") == "\n"
            disabled_at = time.monotonic()
            load.wait_for(len(load.results) + 40)
        finally:
            load.stop()
        assert load.failures == []
        assert set(load.after(disabled_at)) == {BODY[2]}
        for _ in range(3):                    # a keep-alive client: each request is balanced anew
            client.request("GET", "/")
            assert client.getresponse().read() == BODY[2]
        client.close()
    finally:
        assert proc.stop() == 0


def test_drain(lbd: tuple[LbdProcess, str, int]) -> None:
    """set server ... state drain sends new requests elsewhere until ready again."""
    proc, workdir, port = lbd
    assert socat(workdir, "set server web/web1 state drain") == "\n"
    assert {get(port) for _ in range(6)} == {BODY[2]}
    assert server_line(workdir, "web1")[6] == "8"          # SRV_ADMF_FDRAIN
    assert socat(workdir, "set server web/web1 state ready") == "\n"
    assert {get(port) for _ in range(4)} == {BODY[1], BODY[2]}


def test_add_enable_del_server(lbd: tuple[LbdProcess, str, int]) -> None:
    """add server enters maintenance, enable server gives it traffic, del server removes it."""
    proc, workdir, port = lbd
    third = Apache(BODY[3].decode())
    third.start()
    try:
        assert socat(workdir, "add server web/web3 127.0.0.1:%d" % third.port) == "New server registered.\n\n"
        assert BODY[3] not in {get(port) for _ in range(6)}
        assert socat(workdir, "enable server web/web3") == "\n"
        assert {get(port) for _ in range(6)} == {BODY[1], BODY[2], BODY[3]}
        assert socat(workdir, "del server web/web3") == "Only servers in maintenance mode can be deleted.\n\n"
        assert socat(workdir, "disable server web/web3;del server web/web3") == "\nServer deleted.\n\n"
        assert "web3" not in socat(workdir, "show servers state web")
        assert BODY[3] not in {get(port) for _ in range(6)}
    finally:
        third.stop()


def test_errors_and_several_commands(lbd: tuple[LbdProcess, str, int]) -> None:
    """Errors answer HAProxy's texts; ';' runs several commands on one line."""
    proc, workdir, port = lbd
    assert socat(workdir, "disable server nope/web1") == "No such backend.\n\n"
    assert socat(workdir, "disable server web/nope") == "No such server.\n\n"
    assert socat(workdir, "set weight web/web1 300") == \
        "Absolute weight can only be between 0 and 256 inclusive.\n\n"
    assert socat(workdir, "set weight web/web1 3; get weight web/web1") == "\n3 (initial 1)\n\n"
    assert socat(workdir, "show backend") == "# name\nweb\n\n"


def test_prompt_session(lbd: tuple[LbdProcess, str, int]) -> None:
    """An interactive session gets '> ' prompts and stays open until quit."""
    proc, workdir, port = lbd
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect("%s/admin.sock" % workdir)
    s.sendall(b"prompt\nshow cli level\n")
    data = b""
    while not data.endswith(b"admin\n\n> "):
        chunk = s.recv(4096)
        assert chunk, data
        data += chunk
    assert data == b"\n> admin\n\n> "
    s.sendall(b"quit\n")
    assert s.recv(4096) == b""
    s.close()


def test_huge_line_and_silent_client(lbd: tuple[LbdProcess, str, int]) -> None:
    """A 1 MB line is refused, a silent client is left waiting, and others are served meanwhile."""
    proc, workdir, port = lbd
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.connect("%s/admin.sock" % workdir)
    try:
        proc_big = subprocess.run(["socat", "stdio", "UNIX-CONNECT:%s/admin.sock" % workdir],
                                  input=b"show " + b"x" * (1024 * 1024) + b"\n", capture_output=True, timeout=20)
        assert proc_big.stdout == b"Command line too long (the limit is 16384 bytes).\n\n"
        assert socat(workdir, "show cli level") == "admin\n\n"
        assert get(port) in (BODY[1], BODY[2])
    finally:
        silent.close()


def test_idle_client_times_out(lbd: tuple[LbdProcess, str, int]) -> None:
    """A client that connects and never sends is disconnected after 10 seconds."""
    proc, workdir, port = lbd
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(15)
    s.connect("%s/admin.sock" % workdir)
    start = time.monotonic()
    assert s.recv(10) == b""
    assert 9 <= time.monotonic() - start < 14
    s.close()


def test_lbctl_exit_codes(lbd: tuple[LbdProcess, str, int]) -> None:
    """lbctl prints the answer and exits 0 on success, 1 on an error answer, 2 when unreachable."""
    proc, workdir, port = lbd
    ok = lbctl(workdir, "show", "backend")
    assert (ok.returncode, ok.stdout) == (0, "# name\nweb\n")
    quiet = lbctl(workdir, "disable", "server", "web/web2")
    assert (quiet.returncode, quiet.stdout) == (0, "")
    bad = lbctl(workdir, "disable", "server", "web/nope")
    assert (bad.returncode, bad.stdout) == (1, "No such server.\n")
    denied = lbctl(workdir, "frobnicate")
    assert denied.returncode == 1
    assert denied.stdout.startswith("Unknown command. Please enter one of the following commands only:\n")
    gone = subprocess.run([sys.executable, "-c", "from lbd.cli import run_lbctl; run_lbctl()",
                           "show", "info"], capture_output=True, text=True, timeout=30,
                          env=dict(lbd_env(), LBD_SOCKET="%s/nope.sock" % workdir))
    assert gone.returncode == 2
    assert gone.stderr == "lbctl: cannot connect to %s/nope.sock: No such file or directory\n" % workdir


def test_lbctl_top_once(lbd: tuple[LbdProcess, str, int]) -> None:
    """lbctl top -n 1 prints one table with the frontends, backends and servers."""
    proc, workdir, port = lbd
    socat(workdir, "disable server web/web2")
    top = lbctl(workdir, "top", "-n", "1")
    assert top.returncode == 0, top.stderr
    lines = top.stdout.splitlines()
    assert lines[0].startswith("lbd 0.")
    assert any(line.startswith("www ") and " OPEN " in line for line in lines)
    assert any(line.startswith("  web2 ") and " MAINT " in line for line in lines)


def test_socket_mode(lbd: tuple[LbdProcess, str, int]) -> None:
    """The socket file has the configured mode."""
    proc, workdir, port = lbd
    assert os.stat("%s/admin.sock" % workdir).st_mode & 0o777 == 0o600


def test_second_lbd_on_a_live_socket_fails(lbd: tuple[LbdProcess, str, int], apaches: list[Apache]) -> None:
    """A second lbd configured with a socket a live lbd answers on refuses to start, saying why."""
    proc, workdir, port = lbd
    other = tempfile.mkdtemp(prefix="lbd-admin-e2e2-")
    text = config(workdir, free_port(), {"web1": apaches[0].port})
    path = os.path.join(other, "lbd.toml")
    with open(path, "w") as f:
        f.write(text)
    from lbd.testing import twistd_argv

    run = subprocess.run(twistd_argv(path), env=lbd_env(), cwd=other, capture_output=True, timeout=30)
    out = (run.stdout + run.stderr).decode()
    assert run.returncode == 1
    assert "admin.socket: %s/admin.sock is in use: another lbd is running and answering on it" % workdir in out
    assert socat(workdir, "show cli level") == "admin\n\n"    # the first one is untouched


def test_stale_socket_is_replaced(apaches: list[Apache]) -> None:
    """A socket file left by a crashed lbd does not prevent the start."""
    workdir = tempfile.mkdtemp(prefix="lbd-admin-stale-")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind("%s/admin.sock" % workdir)
    stale.close()
    port = free_port()
    proc = LbdProcess(config(workdir, port, {"web1": apaches[0].port}), workdir=workdir)
    try:
        assert socat(workdir, "show cli level") == "admin\n\n"
        assert "removed a stale socket file" in proc.log()
    finally:
        assert proc.stop() == 0


def test_state_survives_restart(apaches: list[Apache]) -> None:
    """With a state file, maintenance set by an operator is still there after a restart."""
    workdir = tempfile.mkdtemp(prefix="lbd-admin-state-")
    port = free_port()
    text = config(workdir, port, {"web1": apaches[0].port, "web2": apaches[1].port}, state_file=True)
    proc = LbdProcess(text, workdir=workdir)
    try:
        assert socat(workdir, "disable server web/web1; set weight web/web2 5") == "\n\n"
    finally:
        assert proc.stop() == 0
    proc = LbdProcess(text, workdir=workdir)
    try:
        assert server_line(workdir, "web1")[6] == "1"
        assert server_line(workdir, "web2")[7] == "5"
        assert {get(port) for _ in range(4)} == {BODY[2]}
    finally:
        assert proc.stop() == 0


def test_truncated_state_file_ignored(apaches: list[Apache]) -> None:
    """A truncated state file is reported in the log and lbd starts with the configured state."""
    workdir = tempfile.mkdtemp(prefix="lbd-admin-trunc-")
    port = free_port()
    text = config(workdir, port, {"web1": apaches[0].port, "web2": apaches[1].port}, state_file=True)
    proc = LbdProcess(text, workdir=workdir)
    try:
        socat(workdir, "disable server web/web1")
    finally:
        assert proc.stop() == 0
    with open("%s/state.json" % workdir, "r+b") as f:
        f.truncate(50)
    proc = LbdProcess(text, workdir=workdir)
    try:
        assert "state file %s/state.json ignored: it is not valid JSON (truncated or corrupt?)" % workdir in proc.log()
        assert server_line(workdir, "web1")[6] == "0"
        assert {get(port) for _ in range(4)} == {BODY[1], BODY[2]}
    finally:
        assert proc.stop() == 0
