"""HTTP mode end to end: the real daemon in front of two real Apaches on a name-based VirtualHost."""
from __future__ import annotations

import http.client
import os
import socket
import threading
import time
from typing import Iterator

import pytest

from lbd.testing import Apache, LbdProcess, free_port

pytestmark = pytest.mark.skipif(not Apache.available(), reason="apache2 is not installed")

BIG = 100 * 1024 * 1024


def http_config(port: int, servers: dict[str, int], extra: str = "") -> str:
    lines = "".join('%s = { address = "127.0.0.1:%d" }\n' % (n, p) for n, p in servers.items())
    return """\
[global]
grace = "2s"
[admin]
socket = "off"
[metrics]
bind = "off"
[log]
access = "-"
[defaults]
mode = "http"
retries = 3
redispatch = true
[defaults.timeout]
connect = "1s"
server = "10s"
[frontends.www]
bind = "127.0.0.1:%d"
default_backend = "web"
%s
[backends.web.servers]
%s""" % (port, extra, lines)


def rss_kb(pid: int) -> int:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


@pytest.fixture
def apaches() -> Iterator[list[Apache]]:
    servers = [Apache("Server 1 here\n"), Apache("Server 2 here\n")]
    for a in servers:
        a.start()
    yield servers
    for a in servers:
        a.stop()


@pytest.fixture
def lbd(apaches: list[Apache]) -> Iterator[tuple[LbdProcess, int]]:
    port = free_port()
    proc = LbdProcess(http_config(port, {"web1": apaches[0].port, "web2": apaches[1].port}))
    yield proc, port
    proc.stop()


def test_round_robin_over_one_keep_alive_connection(lbd: tuple[LbdProcess, int]) -> None:
    """Requests on one client connection alternate between the two Apaches, and the connection stays open."""
    _, port = lbd
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    bodies = []
    socks = set()
    for _ in range(6):
        conn.request("GET", "/", headers={"Host": "example.com"})
        resp = conn.getresponse()
        assert resp.status == 200
        bodies.append(resp.read())
        socks.add(id(conn.sock))
    conn.close()
    assert bodies == [b"Server 1 here\n", b"Server 2 here\n"] * 3
    assert len(socks) == 1


def test_host_and_forwarded_for_reach_apache(lbd: tuple[LbdProcess, int], apaches: list[Apache]) -> None:
    """Apache's access log shows the client's Host header and lbd's X-Forwarded-For."""
    _, port = lbd
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(2):
        conn.request("GET", "/", headers={"Host": "example.com"})
        conn.getresponse().read()
    conn.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not (apaches[0].access_log() and apaches[1].access_log()):
        time.sleep(0.05)
    for a in apaches:
        assert a.access_log().splitlines() == ['127.0.0.1 example.com "GET / HTTP/1.1" 200 14 "127.0.0.1"']


def test_access_log_line_per_request(lbd: tuple[LbdProcess, int]) -> None:
    """lbd logs one httplog line per request, naming backend and server."""
    proc, port = lbd
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/", headers={"Host": "example.com"})
    conn.getresponse().read()
    conn.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and '"GET / HTTP/1.1"' not in proc.log():
        time.sleep(0.05)
    line = [x for x in proc.log().splitlines() if '"GET / HTTP/1.1"' in x][0]
    assert " www web/web1 " in line
    assert " 200 " in line and " ---- 1/1/1/1/0 0/0 " in line


def test_100mb_download_streams_with_bounded_memory(lbd: tuple[LbdProcess, int], apaches: list[Apache]) -> None:
    """A 100 MB response reaches a slow client whole while lbd's RSS stays far below the body size."""
    proc, port = lbd
    for a in apaches:
        with open(os.path.join(a.root, "htdocs", "big.bin"), "wb") as f:
            f.truncate(BIG)
    base = rss_kb(proc.proc.pid)
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: example.com\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    head, _, body_start = head.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: %d" % BIG in head
    time.sleep(1.5)          # a proxy without back-pressure would read it all meanwhile
    peak = rss_kb(proc.proc.pid)
    got = len(body_start)
    n = 0
    while got < BIG:
        data = sock.recv(1 << 20)
        assert data, "connection closed after %d bytes" % got
        got += len(data)
        n += 1
        if n % 64 == 0:
            peak = max(peak, rss_kb(proc.proc.pid))
    sock.close()
    assert got == BIG
    assert peak - base < 40 * 1024, "lbd RSS grew by %d kB during a %d MB download" % (peak - base, BIG >> 20)


def test_100mb_upload_streams_with_bounded_memory(lbd: tuple[LbdProcess, int]) -> None:
    """A 100 MB request body reaches Apache whole (it answers only after reading it) with lbd's RSS bounded."""
    proc, port = lbd
    base = rss_kb(proc.proc.pid)
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"POST /index.html HTTP/1.1\r\nHost: example.com\r\nContent-Length: %d\r\n\r\n" % BIG)
    chunk = b"u" * (1 << 20)
    peak = base
    for i in range(BIG // len(chunk)):
        sock.sendall(chunk)
        if i % 8 == 0:
            peak = max(peak, rss_kb(proc.proc.pid))
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"here\n"):
        more = sock.recv(65536)
        assert more, "closed: %r" % data
        data += more
    sock.close()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b"Server 1 here\n")
    assert peak - base < 40 * 1024, "lbd RSS grew by %d kB during a %d MB upload" % (peak - base, BIG >> 20)


def test_upload_to_a_slow_server_is_flow_controlled() -> None:
    """While a server does not read, lbd stops reading the uploading client instead of buffering the body."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    received = [0]
    reading = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        conn.settimeout(30)
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        received[0] = len(data.partition(b"\r\n\r\n")[2])
        reading.wait(30)
        while received[0] < BIG:
            more = conn.recv(1 << 20)
            if not more:
                break
            received[0] += len(more)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        conn.close()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    port = free_port()
    proc = LbdProcess(http_config(port, {"slow": listener.getsockname()[1]}))
    sent = [0]

    def upload(sock: socket.socket) -> None:
        sock.sendall(b"POST /up HTTP/1.1\r\nHost: example.com\r\nContent-Length: %d\r\n\r\n" % BIG)
        chunk = b"u" * 65536
        while sent[0] < BIG:
            sock.sendall(chunk)
            sent[0] += len(chunk)

    try:
        base = rss_kb(proc.proc.pid)
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        uploader = threading.Thread(target=upload, args=(sock,), daemon=True)
        uploader.start()
        time.sleep(1.5)
        stalled = sent[0]
        grown = rss_kb(proc.proc.pid) - base
        reading.set()
        uploader.join(60)
        data = b""
        while not data.endswith(b"ok"):
            more = sock.recv(4096)
            assert more, data
            data += more
        sock.close()
        server.join(10)
    finally:
        proc.stop()
        listener.close()
    assert stalled < 24 * 1024 * 1024, "the client could send %d bytes to a server that reads nothing" % stalled
    assert grown < 40 * 1024, "lbd RSS grew by %d kB" % grown
    assert received[0] == BIG
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")


def test_chunked_upload_passes(lbd: tuple[LbdProcess, int]) -> None:
    """A chunked request body is forwarded verbatim and Apache answers it."""
    _, port = lbd
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"POST /index.html HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(10):
        sock.sendall(b"1000\r\n" + b"c" * 4096 + b"\r\n")
    sock.sendall(b"0\r\n\r\n")
    data = b""
    while not data.endswith(b"here\n"):
        more = sock.recv(65536)
        assert more, "closed: %r" % data
        data += more
    sock.close()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")


def test_stopping_an_apache_under_load_loses_no_request(apaches: list[Apache]) -> None:
    """Four clients loop over keep-alive connections while one Apache stops: every request gets a 200."""
    port = free_port()
    proc = LbdProcess(http_config(port, {"web1": apaches[0].port, "web2": apaches[1].port}))
    errors: list[str] = []
    served: dict[bytes, int] = {}
    stop_at = time.monotonic() + 4.0
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        n = 0
        while time.monotonic() < stop_at and n < 5000:
            n += 1
            try:
                conn.request("GET", "/", headers={"Host": "example.com"})
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    errors.append("status %d" % resp.status)
                with lock:
                    served[body] = served.get(body, 0) + 1
            except Exception as e:  # any failure is what the test counts
                errors.append(repr(e))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.5)
        before = dict(served)
        apaches[0].stop()
        for t in threads:
            t.join(30)
        after_stop = served.get(b"Server 1 here\n", 0) - before.get(b"Server 1 here\n", 0)
    finally:
        proc.stop()
    assert errors == [], errors[:10]
    assert before.get(b"Server 1 here\n", 0) > 0 and before.get(b"Server 2 here\n", 0) > 0
    assert served[b"Server 2 here\n"] > before[b"Server 2 here\n"]
    assert after_stop <= 8, "web1 kept serving after it stopped: %d" % after_stop
