"""Micro-benchmark of lbd.http.parser (not a test): requests and responses per second.

    python3 bench/parser_micro.py [N]

Each case parses N messages (default 100000) through a handler that does
nothing, one message per feed() as a socket read usually delivers them, and
prints messages/second; the best of 3 runs is kept.  Runs in a few seconds.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lbd.http.parser import RequestParser, ResponseParser  # noqa: E402

BROWSER_GET = (
    b"GET /static/app.js?v=1234 HTTP/1.1\r\n"
    b"Host: www.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n"
    b"Accept: */*\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Referer: https://www.example.com/\r\n"
    b"Cookie: session=0123456789abcdef; theme=dark\r\n"
    b"Connection: keep-alive\r\n"
    b"\r\n"
)
SMALL_GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
POST_CL = (b"POST /api/items HTTP/1.1\r\nHost: api.example.com\r\nContent-Type: application/json\r\n"
           b"Content-Length: 27\r\n\r\n{\"name\": \"x\", \"count\": 42}\n")
POST_CHUNKED = (b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"10\r\n0123456789abcdef\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n")
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: Apache\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
            b"Content-Type: text/html\r\nContent-Length: 13\r\nConnection: keep-alive\r\n\r\n<html></html>")


class Sink:
    """Counts messages; does nothing else."""

    def __init__(self) -> None:
        self.n = 0

    def request_head(self, head: Any) -> None:
        pass

    def request_body(self, data: bytes) -> None:
        pass

    def request_end(self) -> None:
        self.n += 1

    def request_error(self, status: int, reason: str) -> None:
        raise AssertionError(reason)

    response_informational = response_head = request_head
    response_body = request_body
    response_end = request_end

    def response_error(self, reason: str) -> None:
        raise AssertionError(reason)


def run_requests(msg: bytes, n: int) -> float:
    sink = Sink()
    p = RequestParser(sink)
    feed = p.feed
    t = time.perf_counter()
    for _ in range(n):
        feed(msg)
    dt = time.perf_counter() - t
    assert sink.n == n
    return dt


def run_pipelined(msg: bytes, n: int, depth: int = 10) -> float:
    sink = Sink()
    p = RequestParser(sink)
    batch = msg * depth
    t = time.perf_counter()
    for _ in range(n // depth):
        p.feed(batch)
    dt = time.perf_counter() - t
    assert sink.n == n // depth * depth
    return dt


def run_responses(msg: bytes, n: int) -> float:
    sink = Sink()
    p = ResponseParser(sink)
    t = time.perf_counter()
    for _ in range(n):
        p.expect(b"GET")
        p.feed(msg)
    dt = time.perf_counter() - t
    assert sink.n == n
    return dt


def run_bytewise(msg: bytes, n: int) -> float:
    sink = Sink()
    p = RequestParser(sink)
    pieces = [msg[i:i + 1] for i in range(len(msg))]
    t = time.perf_counter()
    for _ in range(n):
        for b in pieces:
            p.feed(b)
    dt = time.perf_counter() - t
    assert sink.n == n
    return dt


def run_body_stream(n: int, size: int = 16384) -> float:
    """One request with a large Content-Length body, fed in socket-sized segments."""
    sink = Sink()
    p = RequestParser(sink)
    seg = b"x" * size
    p.feed(b"PUT /big HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % (size * n))
    t = time.perf_counter()
    for _ in range(n):
        p.feed(seg)
    dt = time.perf_counter() - t
    assert sink.n == 1
    return dt


def best(fn: Callable[[], float]) -> float:
    return min(fn() for _ in range(3))


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
    cases: list[tuple[str, Callable[[], float], int]] = [
        ("small GET", lambda: run_requests(SMALL_GET, n), n),
        ("browser GET (9 headers)", lambda: run_requests(BROWSER_GET, n), n),
        ("browser GET, 10 pipelined per feed", lambda: run_pipelined(BROWSER_GET, n), n),
        ("POST Content-Length", lambda: run_requests(POST_CL, n), n),
        ("POST chunked", lambda: run_requests(POST_CHUNKED, n), n),
        ("response 200 + body", lambda: run_responses(RESPONSE, n), n),
        ("browser GET byte by byte", lambda: run_bytewise(BROWSER_GET, n // 100), n // 100),
    ]
    print("python %s" % sys.version.split()[0])
    for name, fn, count in cases:
        dt = best(fn)
        print("%-38s %10.0f msg/s  (%.2f us each)" % (name, count / dt, dt / count * 1e6))
    segs = max(n // 10, 1)
    dt = best(lambda: run_body_stream(segs))
    print("%-38s %10.0f MB/s  (%.2f us a feed: passed on uncopied)"
          % ("body stream, 16 KiB feeds", segs * 16384 / dt / 1e6, dt / segs * 1e6))


if __name__ == "__main__":
    main()
