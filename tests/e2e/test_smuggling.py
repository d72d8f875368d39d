"""The anti-smuggling table end to end: the real daemon in front of a raw server that records every byte.

Each malformed request gets its 4xx and a closed connection, and the server
receives nothing: not a byte, not even a connection. A well-formed request
at the end shows the same path does reach the server.
"""
from __future__ import annotations

import socket
import threading
from typing import Iterator

import pytest

from lbd.testing import LbdProcess, free_port

H = b"Host: example.com\r\n"

# (name, raw request, expected status)
TABLE: list[tuple[str, bytes, int]] = [
    ("CL and TE", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("TE and CL", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n", 400),
    ("two equal CL", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400),
    ("two different CL", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nxy", 400),
    ("CL list", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1, 1\r\n\r\nx", 400),
    ("CL sign", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +1\r\n\r\nx", 400),
    ("CL not a number", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1e1\r\n\r\nx", 400),
    ("TE chunked not last", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400),
    ("TE without chunked", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n", 400),
    ("TE xchunked", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400),
    ("TE chunked twice", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("TE with parameter", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n", 400),
    ("TE on HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("space before colon", b"GET / HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n\r\n", 400),
    ("tab before colon", b"GET / HTTP/1.1\r\nHost\t: example.com\r\n\r\n", 400),
    ("obs-fold", b"GET / HTTP/1.1\r\n" + H + b"X-A: 1\r\n 2\r\n\r\n", 400),
    ("bare LF", b"GET / HTTP/1.1\n" + b"Host: example.com\n\n", 400),
    ("bare LF in a header", b"GET / HTTP/1.1\r\n" + H + b"X-A: 1\nX-B: 2\r\n\r\n", 400),
    ("bare CR", b"GET / HTTP/1.1\r\n" + H + b"X-A: 1\rX-B: 2\r\n\r\n", 400),
    ("NUL in a value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", 400),
    ("control byte in a value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x01b\r\n\r\n", 400),
    ("DEL in a value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x7fb\r\n\r\n", 400),
    ("invalid method", b"G(T / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("invalid header name", b"GET / HTTP/1.1\r\n" + H + b"X@Y: 1\r\n\r\n", 400),
    ("empty header name", b"GET / HTTP/1.1\r\n" + H + b": 1\r\n\r\n", 400),
    ("missing Host", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("two Hosts", b"GET / HTTP/1.1\r\n" + H + b"Host: other.example\r\n\r\n", 400),
    ("invalid Host", b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n", 400),
    ("space in target", b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("unknown version", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 400),
    ("bad chunk size", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk size overflow", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n" + b"f" * 17 + b"\r\n", 400),
    ("chunk size with blank", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n", 400),
    ("bad chunk extension", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3;a b\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk size bare LF", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", 400),
    ("request line too long", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
    ("head too large", b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"b" * 20000 + b"\r\n\r\n", 431),
]


class Recorder:
    """A raw TCP server counting every connection and byte; answers a fixed 200 to each complete head."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.data = b""
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        pending = b""
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                with self.lock:
                    self.data += data
                pending += data
                while b"\r\n\r\n" in pending:
                    _, _, pending = pending.partition(b"\r\n\r\n")
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except OSError:
            return
        finally:
            conn.close()

    def close(self) -> None:
        self.closed = True
        self.sock.close()


def exchange(port: int, raw: bytes) -> bytes:
    """Send ``raw`` at once and read until lbd closes (bounded by a timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        out = b""
        while True:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            out += data
        return out


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[int, Recorder]]:
    rec = Recorder()
    port = free_port()
    cfg = """\
[admin]
socket = "off"
[metrics]
bind = "off"
[log]
access = "off"
[frontends.www]
bind = "127.0.0.1:%d"
default_backend = "raw"
[backends.raw.servers]
rec = { address = "127.0.0.1:%d" }
""" % (port, rec.port)
    proc = LbdProcess(cfg)
    yield port, rec
    proc.stop()
    rec.close()


@pytest.mark.parametrize("name,raw,status", TABLE, ids=[row[0] for row in TABLE])
def test_malformed_request_is_rejected_and_never_forwarded(setup: tuple[int, Recorder], name: str, raw: bytes,
                                                           status: int) -> None:
    """The malformed request gets its status with Connection: close, and the server sees nothing."""
    port, rec = setup
    answer = exchange(port, raw)
    assert answer.startswith(b"HTTP/1.1 %d " % status), (name, answer[:200])
    assert b"\r\nConnection: close\r\n\r\n" in answer
    assert (rec.connections, rec.data) == (0, b""), name


def test_well_formed_request_does_reach_the_server(setup: tuple[int, Recorder]) -> None:
    """The control case: a valid request through the same lbd arrives at the recorder."""
    port, rec = setup
    answer = exchange(port, b"GET /ok HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n")
    assert answer.endswith(b"\r\n\r\nok")
    assert rec.data.startswith(b"GET /ok HTTP/1.1\r\nHost: example.com\r\n")
