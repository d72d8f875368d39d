"""TCP mode end to end: the real daemon under twistd, real sockets, real Apache."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from lbd.testing import Apache, LbdProcess, free_port, twistd_argv, lbd_env

pytestmark = pytest.mark.skipif(not Apache.available(), reason="apache2 is not installed")


def tcp_config(port: int, servers: dict[str, int], extra: str = "") -> str:
    lines = "".join('%s = { address = "127.0.0.1:%d" }\n' % (n, p) for n, p in servers.items())
    return """\
[global]
grace = "5s"
[admin]
socket = "off"
[metrics]
bind = "off"
[defaults]
mode = "tcp"
retries = 3
[defaults.timeout]
connect = "1s"
[frontends.www]
bind = "127.0.0.1:%d"
default_backend = "web"
%s
[backends.web.servers]
%s""" % (port, extra, lines)


def get(port: int, path: str = "/") -> bytes:
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
        return r.read()


@pytest.fixture
def apaches():  # type: ignore[no-untyped-def]
    servers = [Apache("Server 1 here\n"), Apache("Server 2 here\n")]
    for a in servers:
        a.start()
    yield servers
    for a in servers:
        a.stop()


def test_round_robin_then_failover(apaches) -> None:  # type: ignore[no-untyped-def]
    """Requests alternate over two Apaches; with one stopped, every request still succeeds."""
    port = free_port()
    lbd = LbdProcess(tcp_config(port, {"web1": apaches[0].port, "web2": apaches[1].port}))
    try:
        bodies = [get(port) for _ in range(4)]
        assert bodies == [b"Server 1 here\n", b"Server 2 here\n"] * 2
        apaches[0].stop()
        bodies = [get(port) for _ in range(6)]
        assert bodies == [b"Server 2 here\n"] * 6
        log = lbd.log()
        assert " www web/web2 " in log
    finally:
        assert lbd.stop() == 0


def test_slow_reader_keeps_memory_bounded() -> None:
    """A client that does not read a fast server's stream does not make lbd buffer it."""
    payload = 64 * 1024 * 1024
    srv_sock = socket.socket()
    srv_sock.bind(("127.0.0.1", 0))
    srv_sock.listen(1)
    sent = [0]

    def serve() -> None:
        conn, _ = srv_sock.accept()
        conn.settimeout(20)
        chunk = b"x" * 65536
        try:
            while sent[0] < payload:
                conn.sendall(chunk)
                sent[0] += len(chunk)
        except OSError:
            pass
        finally:
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    port = free_port()
    lbd = LbdProcess(tcp_config(port, {"fast": srv_sock.getsockname()[1]}))
    try:
        c = socket.create_connection(("127.0.0.1", port))
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        time.sleep(2.0)  # the server writes as fast as lbd lets it, the client reads nothing
        rss_kb = _rss_kb(lbd.proc.pid)
        stalled_at = sent[0]
        assert stalled_at < 16 * 1024 * 1024, "lbd kept reading from the server: %d bytes" % stalled_at
        assert rss_kb < 120 * 1024, "lbd RSS grew to %d kB" % rss_kb
        # Now drain: every byte arrives.
        got = 0
        c.settimeout(20)
        while got < payload:
            data = c.recv(1 << 20)
            if not data:
                break
            got += len(data)
        assert got == payload
        c.close()
    finally:
        lbd.stop()
        srv_sock.close()


def _rss_kb(pid: int) -> int:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_half_close_reaches_the_server_and_the_answer_comes_back() -> None:
    """A client that shuts down its write side still gets the server's answer."""
    srv_sock = socket.socket()
    srv_sock.bind(("127.0.0.1", 0))
    srv_sock.listen(1)

    def serve() -> None:
        conn, _ = srv_sock.accept()
        conn.settimeout(10)
        data = b""
        while True:
            chunk = conn.recv(4096)
            if not chunk:          # the client's FIN arrived through lbd
                break
            data += chunk
        conn.sendall(b"got " + data)
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    port = free_port()
    lbd = LbdProcess(tcp_config(port, {"echo": srv_sock.getsockname()[1]}))
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        c.sendall(b"question")
        c.shutdown(socket.SHUT_WR)
        answer = b""
        while True:
            chunk = c.recv(4096)
            if not chunk:
                break
            answer += chunk
        assert answer == b"got question"
        c.close()
    finally:
        lbd.stop()
        srv_sock.close()


def test_blackholed_server_is_retried_elsewhere() -> None:
    """A server that never accepts (backlog full) is abandoned at timeout.connect and the next one serves."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    fillers = []
    for _ in range(8):  # fill the accept backlog so further SYNs go unanswered
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(hole.getsockname())
        except BlockingIOError:
            pass
        fillers.append(s)
    good = Apache("Server 2 here\n")
    lbd = None
    try:
        good.start()
        port = free_port()
        lbd = LbdProcess(tcp_config(port, {"hole": hole.getsockname()[1], "good": good.port}))
        start = time.monotonic()
        bodies = [get(port) for _ in range(2)]
        assert bodies == [b"Server 2 here\n"] * 2
        assert time.monotonic() - start < 8
    finally:
        # Stop whatever started, even when lbd itself failed to start.
        if lbd is not None:
            lbd.stop()
        good.stop()
        for s in fillers:
            s.close()
        hole.close()


def test_bind_conflict_exits_non_zero_with_a_clear_message() -> None:
    """A port already taken aborts startup with the bind named, exit status 1."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    import tempfile
    d = tempfile.mkdtemp(prefix="lbd-bind-")
    path = os.path.join(d, "lbd.toml")
    with open(path, "w") as f:
        f.write(tcp_config(port, {"s": 1}))
    try:
        proc = subprocess.run(twistd_argv(path), env=lbd_env(), cwd=d, capture_output=True, timeout=30)
    finally:
        taken.close()
    out = (proc.stdout + proc.stderr).decode()
    assert proc.returncode == 1
    assert "frontends.www.bind: cannot listen on 127.0.0.1:%d" % port in out
    assert "Address already in use" in out
    assert "Traceback" not in out


def test_invalid_config_exits_non_zero_listing_every_error() -> None:
    """twistd with an invalid file lists every problem and binds nothing."""
    import tempfile
    d = tempfile.mkdtemp(prefix="lbd-bad-")
    path = os.path.join(d, "lbd.toml")
    port = free_port()
    with open(path, "w") as f:
        f.write(tcp_config(port, {"s": 1}).replace('default_backend = "web"', 'default_backend = "nope"\ncolour = "red"'))
    proc = subprocess.run(twistd_argv(path), env=lbd_env(), cwd=d, capture_output=True, timeout=30)
    out = (proc.stdout + proc.stderr).decode()
    assert proc.returncode != 0
    assert "frontends.www.default_backend: no backend named 'nope'" in out
    assert "frontends.www.colour: unknown key" in out
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def _echo_server() -> socket.socket:
    """A loopback server echoing every connection until its peer closes."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)

    def handle(conn: socket.socket) -> None:
        conn.settimeout(30)
        try:
            while True:
                data = conn.recv(4096)
                if not data:
                    break
                conn.sendall(data)
        except OSError:
            pass
        finally:
            conn.close()

    def accept() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return srv


def test_sigterm_closes_listeners_and_lets_connections_finish() -> None:
    """On SIGTERM new connections are refused at once; an open one keeps working until it ends."""
    echo = _echo_server()
    port = free_port()
    lbd = LbdProcess(tcp_config(port, {"echo": echo.getsockname()[1]}))
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        c.sendall(b"before")
        assert c.recv(100) == b"before"
        lbd.signal(signal.SIGTERM)
        lbd.wait_for_log("stopping: waiting up to 5.0s for 1 connection(s)")
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        c.sendall(b"during")
        assert c.recv(100) == b"during"
        c.close()
        lbd.proc.wait(10)
        assert "grace period over" not in lbd.log()
    finally:
        assert lbd.stop() == 0
        echo.close()


def test_grace_period_ends_stuck_connections() -> None:
    """A connection still open when global.grace ends is closed, and lbd exits."""
    echo = _echo_server()
    port = free_port()
    lbd = LbdProcess(tcp_config(port, {"echo": echo.getsockname()[1]}).replace('grace = "5s"', 'grace = "1s"'))
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        c.sendall(b"x")
        assert c.recv(10) == b"x"
        start = time.monotonic()
        lbd.signal(signal.SIGTERM)
        lbd.proc.wait(10)
        assert 0.9 < time.monotonic() - start < 5
        assert "stopping: grace period over, closing 1 connection(s)" in lbd.log()
        try:
            data = c.recv(10)
        except ConnectionResetError:
            data = b""
        assert data == b""
    finally:
        assert lbd.stop() == 0
        echo.close()
