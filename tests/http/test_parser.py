"""HTTP/1.1 framing: valid messages, the smuggling table, responses, flow control."""
from __future__ import annotations

from typing import Any

import pytest

from lbd.http.parser import RequestHead, RequestParser, ResponseHead, ResponseParser


class RequestLog:
    """A request handler that records every callback, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def request_head(self, head: RequestHead) -> None:
        self.events.append(("head", head))

    def request_body(self, data: bytes) -> None:
        assert type(data) is bytes
        self.events.append(("body", data))

    def request_end(self) -> None:
        self.events.append(("end",))

    def request_error(self, status: int, reason: str) -> None:
        self.events.append(("error", status, reason))


class ResponseLog:
    """A response handler that records every callback, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def response_informational(self, head: ResponseHead) -> None:
        self.events.append(("info", head))

    def response_head(self, head: ResponseHead) -> None:
        self.events.append(("head", head))

    def response_body(self, data: bytes) -> None:
        assert type(data) is bytes
        self.events.append(("body", data))

    def response_end(self) -> None:
        self.events.append(("end",))

    def response_error(self, reason: str) -> None:
        self.events.append(("error", reason))


def merged(events: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Consecutive body events joined, so logs of different splits compare equal."""
    out: list[tuple[Any, ...]] = []
    for e in events:
        if e[0] == "body" and out and out[-1][0] == "body":
            out[-1] = ("body", out[-1][1] + e[1])
        else:
            out.append(e)
    return out


def requests_whole(data: bytes, **kw: Any) -> list[tuple[Any, ...]]:
    log = RequestLog()
    RequestParser(log, **kw).feed(data)
    return log.events


def requests_bytewise(data: bytes, **kw: Any) -> list[tuple[Any, ...]]:
    log = RequestLog()
    p = RequestParser(log, **kw)
    for i in range(len(data)):
        p.feed(data[i:i + 1])
    return merged(log.events)


def summary(events: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Heads reduced to the fields the relay acts on."""
    out: list[tuple[Any, ...]] = []
    for e in merged(events):
        if e[0] in ("head", "info") and isinstance(e[1], RequestHead):
            h = e[1]
            out.append(("head", h.method, h.target, h.version, h.host, h.content_length, h.chunked,
                        h.keep_alive, h.expect_continue, h.upgrade))
        elif e[0] in ("head", "info"):
            h = e[1]
            out.append((e[0], h.status, h.reason, h.content_length, h.chunked, h.keep_alive,
                        h.body_until_close))
        else:
            out.append(e)
    return out


def GET(target: bytes = b"/", host: bytes | None = b"a", version: bytes = b"HTTP/1.1",
        ka: bool = True) -> tuple[Any, ...]:
    return ("head", b"GET", target, version, host, None, False, ka, False, None)


CHUNKED_BODY = (b"5;name=val;q=\"a \\\" b\"\r\nhello\r\n"
                b"1A\r\nabcdefghijklmnopqrstuvwxyz\r\n"
                b"0\r\nX-Checksum: 42\r\nX-Other:\tv\r\n\r\n")

VALID_REQUESTS: list[tuple[str, bytes, list[tuple[Any, ...]]]] = [
    ("get", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", [GET(), ("end",)]),
    ("post-content-length",
     b"POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world",
     [("head", b"POST", b"/form", b"HTTP/1.1", b"a", 11, False, True, False, None),
      ("body", b"hello world"), ("end",)]),
    ("content-length-zero",
     b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
     [("head", b"POST", b"/", b"HTTP/1.1", b"a", 0, False, True, False, None), ("end",)]),
    ("chunked-extensions-trailers",
     b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + CHUNKED_BODY,
     [("head", b"POST", b"/up", b"HTTP/1.1", b"a", None, True, True, False, None),
      ("body", CHUNKED_BODY), ("end",)]),
    ("chunked-after-gzip",
     b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n0\r\n\r\n",
     [("head", b"POST", b"/", b"HTTP/1.1", b"a", None, True, True, False, None),
      ("body", b"0\r\n\r\n"), ("end",)]),
    ("chunked-across-two-te-headers",
     b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     [("head", b"POST", b"/", b"HTTP/1.1", b"a", None, True, True, False, None),
      ("body", b"0\r\n\r\n"), ("end",)]),
    ("chunk-extension-blanks",
     b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1 ; a = b\r\nx\r\n0\r\n\r\n",
     [("head", b"POST", b"/", b"HTTP/1.1", b"a", None, True, True, False, None),
      ("body", b"1 ; a = b\r\nx\r\n0\r\n\r\n"), ("end",)]),
    ("http10-no-host", b"GET /old HTTP/1.0\r\n\r\n",
     [GET(b"/old", None, b"HTTP/1.0", False), ("end",)]),
    ("http10-keep-alive", b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
     [GET(b"/", None, b"HTTP/1.0", True), ("end",)]),
    ("http11-close", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
     [GET(ka=False), ("end",)]),
    ("http11-close-among-tokens", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: TE, ,Close\r\n\r\n",
     [GET(ka=False), ("end",)]),
    ("pipelined-pair",
     b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: b\r\nContent-Length: 3\r\n\r\nabc",
     [GET(b"/1"), ("end",),
      ("head", b"POST", b"/2", b"HTTP/1.1", b"b", 3, False, True, False, None),
      ("body", b"abc"), ("end",)]),
    ("expect-continue",
     b"PUT /f HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\nok",
     [("head", b"PUT", b"/f", b"HTTP/1.1", b"a", 2, False, True, True, None),
      ("body", b"ok"), ("end",)]),
    ("expect-ignored-on-http10",
     b"PUT /f HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
     [("head", b"PUT", b"/f", b"HTTP/1.0", None, 2, False, False, False, None),
      ("body", b"ok"), ("end",)]),
    ("upgrade",
     b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
     [("head", b"GET", b"/ws", b"HTTP/1.1", b"a", None, False, True, False, b"websocket"), ("end",)]),
    ("upgrade-without-connection-token",
     b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n", [GET(), ("end",)]),
    ("connect", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
     [("head", b"CONNECT", b"example.com:443", b"HTTP/1.1", b"example.com:443", None, False, True,
       False, None), ("end",)]),
    ("leading-empty-lines", b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", [GET(), ("end",)]),
    ("absolute-form", b"GET http://a.example/x?y HTTP/1.1\r\nHost: a.example\r\n\r\n",
     [GET(b"http://a.example/x?y", b"a.example"), ("end",)]),
    ("options-asterisk", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
     [("head", b"OPTIONS", b"*", b"HTTP/1.1", b"a", None, False, True, False, None), ("end",)]),
    ("host-ipv6-port", b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", [GET(host=b"[::1]:8080"), ("end",)]),
    ("value-with-tab-and-obs-text",
     b"GET / HTTP/1.1\r\nHost: a\r\nX-A: one\ttwo \xe9\r\nX-Empty:\r\n\r\n", [GET(), ("end",)]),
]


@pytest.mark.parametrize("name,wire,expected", VALID_REQUESTS, ids=[r[0] for r in VALID_REQUESTS])
def test_valid_request_whole(name: str, wire: bytes, expected: list[tuple[Any, ...]]) -> None:
    """A valid request stream fed in one piece yields the expected events."""
    assert summary(requests_whole(wire)) == expected


@pytest.mark.parametrize("name,wire,expected", VALID_REQUESTS, ids=[r[0] for r in VALID_REQUESTS])
def test_valid_request_bytewise_same_events(name: str, wire: bytes, expected: list[tuple[Any, ...]]) -> None:
    """Fed one byte at a time, a valid request stream yields exactly the events of the whole feed."""
    assert requests_bytewise(wire) == merged(requests_whole(wire))


def test_headers_kept_raw_in_order() -> None:
    """Header names keep their case and order; values lose only surrounding blanks."""
    [(_, head), _] = requests_whole(b"GET / HTTP/1.1\r\nhOsT:  a \r\nX-B:\t2\t\r\nx-b: 1\r\n\r\n")
    assert head.headers == [(b"hOsT", b"a"), (b"X-B", b"2"), (b"x-b", b"1")]
    assert head.host == b"a"


def test_head_size_and_connection_tokens() -> None:
    """head_size counts the head on the wire without leading empty lines; tokens are lowercased."""
    wire = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, X-Foo\r\n\r\n"
    [(_, head), _] = requests_whole(b"\r\n" + wire)
    assert head.head_size == len(wire)
    assert head.connection_tokens == frozenset({b"keep-alive", b"x-foo"})


def test_upgrade_values_joined() -> None:
    """Several Upgrade headers are offered as one comma-separated value."""
    [(_, head), _] = requests_whole(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n"
                                    b"Upgrade: h2c\r\nUpgrade: websocket\r\n\r\n")
    assert head.upgrade == b"h2c, websocket"


# --- the smuggling table: the request is rejected before any of it is delivered -------

def R(*headers: bytes, line: bytes = b"GET / HTTP/1.1") -> bytes:
    return line + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"


H = b"Host: a"
CL_TE = "both Content-Length and Transfer-Encoding"
BAD_TE = "Transfer-Encoding must end with a single chunked"
BAD_CL = "invalid Content-Length"

MALFORMED_HEADS: list[tuple[str, bytes, int, str]] = [
    ("cl-and-te", R(H, b"Content-Length: 5", b"Transfer-Encoding: chunked"), 400, CL_TE),
    ("te-and-cl", R(H, b"Transfer-Encoding: chunked", b"Content-Length: 5"), 400, CL_TE),
    ("two-equal-cl", R(H, b"Content-Length: 5", b"Content-Length: 5"), 400, "multiple Content-Length headers"),
    ("two-cl", R(H, b"Content-Length: 5", b"Content-Length: 6"), 400, "multiple Content-Length headers"),
    ("cl-list", R(H, b"Content-Length: 5, 5"), 400, BAD_CL),
    ("cl-negative", R(H, b"Content-Length: -1"), 400, BAD_CL),
    ("cl-plus", R(H, b"Content-Length: +1"), 400, BAD_CL),
    ("cl-empty", R(H, b"Content-Length:"), 400, BAD_CL),
    ("cl-blank", R(H, b"Content-Length:   "), 400, BAD_CL),
    ("cl-hex", R(H, b"Content-Length: 0x10"), 400, BAD_CL),
    ("cl-inner-space", R(H, b"Content-Length: 1 0"), 400, BAD_CL),
    ("cl-2-63", R(H, b"Content-Length: 9223372036854775808"), 400, BAD_CL),
    ("cl-20-digits", R(H, b"Content-Length: 00000000000000000001"), 400, BAD_CL),
    ("cl-unicode-digit", R(H, b"Content-Length: \xd9\xa1"), 400, BAD_CL),
    ("te-chunked-gzip", R(H, b"Transfer-Encoding: chunked, gzip"), 400, BAD_TE),
    ("te-xchunked", R(H, b"Transfer-Encoding: xchunked"), 400, BAD_TE),
    ("te-gzip-only", R(H, b"Transfer-Encoding: gzip"), 400, BAD_TE),
    ("te-chunked-semicolon", R(H, b"Transfer-Encoding: chunked;"), 400, "invalid Transfer-Encoding"),
    ("te-chunked-param", R(H, b"Transfer-Encoding: chunked;q=1"), 400, "invalid Transfer-Encoding"),
    ("te-duplicate-chunked", R(H, b"Transfer-Encoding: chunked, chunked"), 400, BAD_TE),
    ("te-chunked-twice-in-headers", R(H, b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"), 400, BAD_TE),
    ("te-empty-element", R(H, b"Transfer-Encoding: gzip,,chunked"), 400, "invalid Transfer-Encoding"),
    ("te-trailing-comma", R(H, b"Transfer-Encoding: chunked,"), 400, "invalid Transfer-Encoding"),
    ("te-empty", R(H, b"Transfer-Encoding:"), 400, "invalid Transfer-Encoding"),
    ("te-vertical-tab", R(H, b"Transfer-Encoding: \x0bchunked"), 400, "control character in head"),
    ("te-http10", R(b"Transfer-Encoding: chunked", line=b"POST / HTTP/1.0"), 400,
     "Transfer-Encoding in an HTTP/1.0 request"),
    ("bare-lf-header", b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 400, "bare LF in head"),
    ("bare-lf-request-line", b"GET / HTTP/1.1\nHost: a\r\n\r\n", 400, "bare LF in head"),
    ("lf-only-head", b"GET / HTTP/1.1\nHost: a\n\n", 400, "bare LF in head"),
    ("bare-cr-value", R(H, b"X: a\rb"), 400, "bare CR in head"),
    ("bare-cr-line-end", b"GET / HTTP/1.1\r\nHost: a\r\r\n\r\n", 400, "bare CR in head"),
    ("nul-value", R(H, b"X: a\x00b"), 400, "control character in head"),
    ("nul-name", R(H, b"X\x00: b"), 400, "control character in head"),
    ("del-value", R(H, b"X: a\x7fb"), 400, "control character in head"),
    ("escape-value", R(H, b"X: a\x1bb"), 400, "control character in head"),
    ("ctl-target", R(H, line=b"GET /\x01 HTTP/1.1"), 400, "control character in head"),
    ("obs-fold", R(H, b"X: a", b" b"), 400, "obsolete line folding in head"),
    ("obs-fold-tab", R(H, b"X: a", b"\tb"), 400, "obsolete line folding in head"),
    ("fold-first-header", R(b" Host: a"), 400, "obsolete line folding in head"),
    ("space-before-colon", R(H, b"Content-Length : 5"), 400, "whitespace before colon in header"),
    ("tab-before-colon", R(H, b"Transfer-Encoding\t: chunked"), 400, "whitespace before colon in header"),
    ("empty-name", R(H, b": x"), 400, "empty header name"),
    ("no-colon", R(H, b"X-No-Colon"), 400, "header line without colon"),
    ("bad-name-char", R(H, b"X(y): z"), 400, "invalid character in header name"),
    ("space-in-name", R(H, b"X y: z"), 400, "invalid character in header name"),
    ("non-ascii-name", R(H, b"X\xe9: z"), 400, "invalid character in header name"),
    ("bad-method", R(H, line=b"G(T / HTTP/1.1"), 400, "invalid method"),
    ("empty-method", R(H, line=b" / HTTP/1.1"), 400, "invalid method"),
    ("double-space", R(H, line=b"GET  / HTTP/1.1"), 400, "malformed request line"),
    ("tab-separator", R(H, line=b"GET\t/ HTTP/1.1"), 400, "malformed request line"),
    ("trailing-space", R(H, line=b"GET / HTTP/1.1 "), 400, "malformed request line"),
    ("no-version", R(H, line=b"GET /"), 400, "malformed request line"),
    ("http09", R(line=b"GET /"), 400, "malformed request line"),
    ("space-in-target", R(H, line=b"GET /a b HTTP/1.1"), 400, "malformed request line"),
    ("http2-version", R(H, line=b"GET / HTTP/2.0"), 400, "unsupported HTTP version"),
    ("http12-version", R(H, line=b"GET / HTTP/1.2"), 400, "unsupported HTTP version"),
    ("lowercase-version", R(H, line=b"GET / http/1.1"), 400, "unsupported HTTP version"),
    ("garbage-version", R(H, line=b"GET / FOO"), 400, "unsupported HTTP version"),
    ("fragment-target", R(H, line=b"GET /a#b HTTP/1.1"), 400, "invalid request target"),
    ("non-ascii-target", R(H, line=b"GET /\xc3\xa9 HTTP/1.1"), 400, "invalid request target"),
    ("relative-target", R(H, line=b"GET a/b HTTP/1.1"), 400, "invalid request target"),
    ("asterisk-get", R(H, line=b"GET * HTTP/1.1"), 400, "invalid request target"),
    ("connect-path", R(H, line=b"CONNECT /x HTTP/1.1"), 400, "invalid request target"),
    ("connect-no-port", R(H, line=b"CONNECT example.com HTTP/1.1"), 400, "invalid request target"),
    ("connect-with-body", R(H, b"Content-Length: 2", line=b"CONNECT a:443 HTTP/1.1"), 400,
     "CONNECT request with a body"),
    ("missing-host", R(b"X: y"), 400, "missing Host header"),
    ("two-hosts", R(H, b"Host: b"), 400, "multiple Host headers"),
    ("two-equal-hosts", R(H, H), 400, "multiple Host headers"),
    ("empty-host", R(b"Host:"), 400, "invalid Host header"),
    ("host-inner-space", R(b"Host: a b"), 400, "invalid Host header"),
    ("host-userinfo", R(b"Host: user@a"), 400, "invalid Host header"),
    ("host-slash", R(b"Host: a/b"), 400, "invalid Host header"),
    ("bad-connection-token", R(H, b"Connection: close;"), 400, "invalid Connection header"),
    ("lone-cr-before-request", b"\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bare CR in head"),
    ("lone-lf-before-request", b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bare LF in head"),
]


@pytest.mark.parametrize("name,wire,status,reason", MALFORMED_HEADS, ids=[r[0] for r in MALFORMED_HEADS])
def test_malformed_head_rejected_whole(name: str, wire: bytes, status: int, reason: str) -> None:
    """A malformed head is reported as the only event; nothing of the request is delivered."""
    assert requests_whole(wire + b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") == [("error", status, reason)]


@pytest.mark.parametrize("name,wire,status,reason", MALFORMED_HEADS, ids=[r[0] for r in MALFORMED_HEADS])
def test_malformed_head_rejected_bytewise(name: str, wire: bytes, status: int, reason: str) -> None:
    """Fed byte by byte, a malformed head gives the same single error event."""
    assert requests_bytewise(wire + b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") == [("error", status, reason)]


def test_malformed_after_valid_pipelined_request() -> None:
    """A bad request behind a good one: the good one is delivered, then only the error."""
    events = summary(requests_whole(R(H) + R(H, b"Content-Length: 1", b"Content-Length: 1") + R(H)))
    assert events == [GET(), ("end",), ("error", 400, "multiple Content-Length headers")]


def test_input_after_error_ignored() -> None:
    """Once an error is reported the parser ignores further input."""
    log = RequestLog()
    p = RequestParser(log)
    p.feed(R(b"Host: a", b"Host: b"))
    p.feed(R(H))
    p.feed_eof()
    assert log.events == [("error", 400, "multiple Host headers")]
    assert p.buffered == 0


CHUNKED_HEAD = R(H, b"Transfer-Encoding: chunked", line=b"POST / HTTP/1.1")
CHUNK_OK = b"3\r\nabc\r\n"

# (name, body after a valid first chunk, the bytes of it still delivered, reason)
MALFORMED_CHUNKS: list[tuple[str, bytes, bytes, str]] = [
    ("non-hex-size", b"g\r\nx\r\n0\r\n\r\n", b"", "invalid chunk size"),
    ("empty-size", b"\r\n0\r\n\r\n", b"", "invalid chunk size"),
    ("leading-space", b" 1\r\nx\r\n0\r\n\r\n", b"", "invalid chunk size"),
    ("trailing-space", b"1 \r\nx\r\n0\r\n\r\n", b"", "invalid chunk size"),
    ("trailing-tab", b"1\t\r\nx\r\n0\r\n\r\n", b"", "invalid chunk size"),
    ("hex-prefix", b"0x1\r\nx\r\n0\r\n\r\n", b"", "invalid chunk size"),
    ("signed-size", b"+1\r\nx\r\n0\r\n\r\n", b"", "invalid chunk size"),
    ("underscore-size", b"1_0\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n", b"", "invalid chunk size"),
    ("17-hex-digits", b"00000000000000001\r\nx\r\n0\r\n\r\n", b"", "invalid chunk size"),
    ("size-line-too-long", b"1" + b"0" * 5000, b"", "chunk size line too long"),
    ("missing-crlf-after-data", b"1\r\nxy\r\n0\r\n\r\n", b"1\r\nx", "missing CRLF after chunk data"),
    ("lf-only-after-data", b"1\r\nx\n0\r\n\r\n", b"1\r\nx", "missing CRLF after chunk data"),
    ("bare-lf-size-line", b"1\nx\r\n0\r\n\r\n", b"", "bare LF in chunked body"),
    ("bare-cr-size-line", b"1\rx\r\n0\r\n\r\n", b"", "bare CR in chunked body"),
    ("bare-lf-last-chunk", b"0\n\r\n", b"", "bare LF in chunked body"),
    ("ext-no-name", b"1;\r\nx\r\n0\r\n\r\n", b"", "invalid chunk extension"),
    ("ext-empty-value", b"1;a=\r\nx\r\n0\r\n\r\n", b"", "invalid chunk extension"),
    ("ext-equals-first", b"1;=a\r\nx\r\n0\r\n\r\n", b"", "invalid chunk extension"),
    ("ext-open-quote", b"1;a=\"b\r\nx\r\n0\r\n\r\n", b"", "invalid chunk extension"),
    ("ext-space-in-name", b"1;a b\r\nx\r\n0\r\n\r\n", b"", "invalid chunk extension"),
    ("ext-trailing-space", b"1;a \r\nx\r\n0\r\n\r\n", b"", "invalid chunk extension"),
    ("ext-nul", b"1;a=\"\x00\"\r\nx\r\n0\r\n\r\n", b"", "invalid chunk extension"),
    ("trailer-obs-fold", b"0\r\nX: a\r\n b\r\n\r\n", b"0\r\nX: a\r\n", "obsolete line folding in head"),
    ("trailer-no-colon", b"0\r\nX\r\n\r\n", b"0\r\n", "header line without colon"),
    ("trailer-space-before-colon", b"0\r\nX : a\r\n\r\n", b"0\r\n", "whitespace before colon in header"),
    ("trailer-nul", b"0\r\nX: \x00\r\n\r\n", b"0\r\n", "control character in trailer"),
    ("trailer-bare-cr", b"0\r\nX: a\rb\r\n\r\n", b"0\r\n", "bare CR in chunked body"),
    ("trailer-bare-lf", b"0\r\nX: a\n\r\n", b"0\r\n", "bare LF in chunked body"),
]


@pytest.mark.parametrize("name,body,delivered,reason", MALFORMED_CHUNKS, ids=[r[0] for r in MALFORMED_CHUNKS])
def test_malformed_chunk_rejected(name: str, body: bytes, delivered: bytes, reason: str) -> None:
    """Bad chunk framing ends the request with 400; only the bytes validated before it were delivered."""
    wire = CHUNKED_HEAD + CHUNK_OK + body + R(H)
    whole = merged(requests_whole(wire))
    assert whole[1:] == [("body", CHUNK_OK + delivered), ("error", 400, reason)]
    assert whole[0][1].chunked
    assert requests_bytewise(wire) == whole


def test_chunk_size_of_16_hex_digits_accepted() -> None:
    """Sixteen hex digits, leading zeros included, are still a valid chunk size."""
    body = b"000000000000000A\r\n0123456789\r\n0\r\n\r\n"
    assert requests_whole(CHUNKED_HEAD + body)[1:] == [("body", body), ("end",)]


def test_largest_content_length_accepted() -> None:
    """A Content-Length of 2**63 - 1 is valid; the parser then waits for that many bytes."""
    log = RequestLog()
    p = RequestParser(log)
    p.feed(R(H, b"Content-Length: 9223372036854775807", line=b"PUT / HTTP/1.1") + b"abc")
    assert summary(log.events) == [
        ("head", b"PUT", b"/", b"HTTP/1.1", b"a", 2**63 - 1, False, True, False, None), ("body", b"abc")]


def test_request_line_limit_while_streaming() -> None:
    """A request line over max_request_line is 414 as soon as the limit is passed, CRLF unseen."""
    log = RequestLog()
    p = RequestParser(log, max_request_line=100)
    p.feed(b"GET /" + b"a" * 96)            # 101 bytes: a 100-byte line could still end in CRLF
    assert log.events == []
    p.feed(b"a")
    assert log.events == [("error", 414, "request line too long")]


def test_request_line_limit_exact_fits() -> None:
    """A request line of exactly max_request_line bytes is accepted."""
    line = b"GET /" + b"a" * 86 + b" HTTP/1.1"
    assert len(line) == 100
    assert summary(requests_bytewise(R(H, line=line), max_request_line=100)) == [GET(line[4:-9]), ("end",)]


def test_request_line_limit_whole() -> None:
    """A complete head whose request line is too long is 414 too."""
    wire = R(H, line=b"GET /" + b"a" * 100 + b" HTTP/1.1")
    assert requests_whole(wire, max_request_line=100) == [("error", 414, "request line too long")]


def test_head_limit_while_streaming() -> None:
    """A head over max_header_size is 431 as soon as the limit is reached, end unseen."""
    log = RequestLog()
    p = RequestParser(log, max_header_size=200)
    p.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX: ")
    p.feed(b"a" * (199 - 28))
    assert log.events == []
    p.feed(b"a")
    assert log.events == [("error", 431, "request head too large")]


def test_head_limit_exact_fits() -> None:
    """A head of exactly max_header_size bytes, CRLFCRLF included, is accepted."""
    prefix = b"GET / HTTP/1.1\r\nHost: a\r\nX: "
    wire = prefix + b"a" * (200 - 4 - len(prefix)) + b"\r\n\r\n"
    assert len(wire) == 200
    assert summary(requests_bytewise(wire, max_header_size=200)) == [GET(), ("end",)]
    assert requests_whole(wire + b"G", max_header_size=199) == [("error", 431, "request head too large")]


def test_bare_lf_detected_before_head_ends() -> None:
    """A bare LF is rejected when it arrives, not when a CRLFCRLF finally does."""
    log = RequestLog()
    p = RequestParser(log)
    p.feed(b"GET / HTTP/1.1\r\nHost: a\n")
    assert log.events == [("error", 400, "bare LF in head")]


def test_empty_lines_before_request_bounded() -> None:
    """Endless empty lines before a request line are cut off at max_request_line bytes."""
    log = RequestLog()
    p = RequestParser(log, max_request_line=100)
    p.feed(b"\r\n" * 50)
    assert log.events == []
    p.feed(b"\r\n")
    assert log.events == [("error", 400, "too many empty lines before the request line")]


# --- body delivery -------------------------------------------------------------------

def test_content_length_body_segment_passed_uncopied() -> None:
    """A body segment arriving on its own is handed on as that very bytes object."""
    log = RequestLog()
    p = RequestParser(log)
    p.feed(R(H, b"Content-Length: 100000", line=b"POST / HTTP/1.1"))
    seg = b"x" * 65536
    p.feed(seg)
    assert log.events[-1][1] is seg


def test_body_in_one_feed_is_one_slice() -> None:
    """Head and whole body in one feed: the body comes as one event, not split."""
    body = b"y" * 70000
    events = requests_whole(R(H, b"Content-Length: 70000", line=b"POST / HTTP/1.1") + body)
    assert [e[0] for e in events] == ["head", "body", "end"]
    assert events[1][1] == body


def test_many_chunks_in_one_feed_are_one_slice() -> None:
    """Several chunks arriving together are validated and delivered as one slice."""
    log = RequestLog()
    p = RequestParser(log)
    p.feed(CHUNKED_HEAD)
    body = b"".join(b"%x\r\n%s\r\n" % (n, b"z" * n) for n in range(1, 40)) + b"0\r\n\r\n"
    p.feed(body)
    assert log.events[1:] == [("body", body), ("end",)]


def test_chunked_body_split_in_size_line() -> None:
    """A feed ending inside a chunk-size line delivers up to that line; the rest follows it."""
    log = RequestLog()
    p = RequestParser(log)
    p.feed(CHUNKED_HEAD + b"3\r\nabc\r\n1")
    p.feed(b"0\r\n" + b"q" * 16 + b"\r\n0\r\n\r\n")
    assert log.events[1:] == [("body", b"3\r\nabc\r\n"), ("body", b"10\r\n" + b"q" * 16 + b"\r\n0\r\n\r\n"),
                              ("end",)]


def test_large_chunk_streams_through() -> None:
    """Data of one large chunk is passed on as it arrives, not held until the chunk ends."""
    log = RequestLog()
    p = RequestParser(log)
    p.feed(CHUNKED_HEAD + b"100000\r\n")
    seg = b"d" * 4096
    p.feed(seg)
    assert log.events[1:] == [("body", b"100000\r\n"), ("body", seg)]
    assert log.events[-1][1] is seg
    assert p.buffered == 0


# --- pause, resume, tunnels, end of input --------------------------------------------

class PausingLog(RequestLog):
    """Pauses the parser after the first request ends."""

    parser: RequestParser

    def request_end(self) -> None:
        super().request_end()
        if len([e for e in self.events if e[0] == "end"]) == 1:
            self.parser.pause()


def test_pause_holds_pipelined_request() -> None:
    """Paused after the first request, the parser holds the second until resume()."""
    log = PausingLog()
    p = log.parser = RequestParser(log)
    second = R(b"Host: b", line=b"GET /2 HTTP/1.1")
    p.feed(R(H, line=b"GET /1 HTTP/1.1") + second)
    assert summary(log.events) == [GET(b"/1"), ("end",)]
    assert p.buffered == len(second)
    p.feed(b"GET /3 HTTP/1.1\r\nHost: c\r\n\r\n")
    assert len(log.events) == 2
    p.resume()
    assert summary(log.events) == [GET(b"/1"), ("end",), GET(b"/2", b"b"), ("end",), GET(b"/3", b"c"), ("end",)]
    assert p.buffered == 0


def test_pause_in_head_holds_body() -> None:
    """Paused in request_head, no body event comes until resume()."""

    class Log(RequestLog):
        def request_head(self, head: RequestHead) -> None:
            super().request_head(head)
            p.pause()

    log = Log()
    p = RequestParser(log)
    p.feed(R(H, b"Content-Length: 3", line=b"POST / HTTP/1.1") + b"abc")
    assert [e[0] for e in log.events] == ["head"]
    assert p.buffered == 3
    p.resume()
    assert log.events[1:] == [("body", b"abc"), ("end",)]


def test_buffered_inside_head_callback_counts_same_feed_bytes() -> None:
    """Inside request_head, buffered already counts the body bytes that came with the head."""
    seen = []

    class Log(RequestLog):
        def request_head(self, head: RequestHead) -> None:
            seen.append(p.buffered)

    p = RequestParser(Log())
    p.feed(R(H, b"Content-Length: 5", line=b"POST / HTTP/1.1") + b"12345")
    assert seen == [5]


def test_upgrade_request_pauses_and_leaves_tunnel_bytes() -> None:
    """After an Upgrade request the parser pauses; take_buffer() returns the bytes that followed."""
    log = RequestLog()
    p = RequestParser(log)
    p.feed(R(H, b"Connection: Upgrade", b"Upgrade: websocket") + b"\x81\x85frame")
    assert [e[0] for e in log.events] == ["head", "end"]
    assert p.paused
    p.feed(b"more")
    assert p.take_buffer() == b"\x81\x85framemore"
    assert p.buffered == 0
    assert len(log.events) == 2


def test_connect_request_pauses() -> None:
    """After a CONNECT request the parser pauses, keeping the client's tunnel bytes."""
    log = RequestLog()
    p = RequestParser(log)
    p.feed(R(b"Host: a:443", line=b"CONNECT a:443 HTTP/1.1") + b"\x16\x03\x01")
    assert p.paused
    assert p.take_buffer() == b"\x16\x03\x01"


def test_refused_upgrade_resumes_with_next_request() -> None:
    """When the server refuses the upgrade, resume() goes on with the pipelined request."""
    log = RequestLog()
    p = RequestParser(log)
    p.feed(R(H, b"Connection: upgrade", b"Upgrade: h2c") + R(H, line=b"GET /next HTTP/1.1"))
    assert len(log.events) == 2
    p.resume()
    assert summary(log.events)[2:] == [GET(b"/next"), ("end",)]
    assert not p.paused


def test_clean_eof_between_requests() -> None:
    """The client closing between requests is no event at all."""
    log = RequestLog()
    p = RequestParser(log)
    p.feed(R(H))
    p.feed_eof()
    assert summary(log.events) == [GET(), ("end",)]


def test_eof_in_head_is_400() -> None:
    """The client closing in the middle of a head is reported."""
    log = RequestLog()
    p = RequestParser(log)
    p.feed(b"GET / HTTP/1.1\r\nHo")
    p.feed_eof()
    assert log.events == [("error", 400, "connection closed in the middle of a request")]


def test_eof_in_body_is_400() -> None:
    """The client closing before its Content-Length body is complete is reported after the body seen."""
    log = RequestLog()
    p = RequestParser(log)
    p.feed(R(H, b"Content-Length: 10", line=b"POST / HTTP/1.1") + b"abc")
    p.feed_eof()
    assert [e[0] for e in log.events] == ["head", "body", "error"]
    assert log.events[-1] == ("error", 400, "connection closed in the middle of a request")


def test_eof_while_paused_waits_for_resume() -> None:
    """An end of input while paused is acted on only after the buffered requests."""
    log = PausingLog()
    p = log.parser = RequestParser(log)
    p.feed(R(H) + R(H) + b"GET")
    p.feed_eof()
    assert len(log.events) == 2
    p.resume()
    assert summary(log.events) == [GET(), ("end",), GET(), ("end",),
                                   ("error", 400, "connection closed in the middle of a request")]


def test_reentrant_feed_keeps_order() -> None:
    """Bytes fed from inside a callback are parsed after those already received."""

    class Log(RequestLog):
        def request_end(self) -> None:
            super().request_end()
            if len(self.events) == 2:
                p.feed(R(b"Host: c", line=b"GET /3 HTTP/1.1"))

    log = Log()
    p = RequestParser(log)
    p.feed(R(H, line=b"GET /1 HTTP/1.1") + R(b"Host: b", line=b"GET /2 HTTP/1.1"))
    assert summary(log.events) == [GET(b"/1"), ("end",), GET(b"/2", b"b"), ("end",), GET(b"/3", b"c"), ("end",)]


# --- responses -------------------------------------------------------------------------

def responses(methods: list[bytes], wire: bytes, eof: bool = False, bytewise: bool = False) -> list[Any]:
    log = ResponseLog()
    p = ResponseParser(log)
    for m in methods:
        p.expect(m)
    if bytewise:
        for i in range(len(wire)):
            p.feed(wire[i:i + 1])
    else:
        p.feed(wire)
    if eof:
        p.feed_eof()
    return summary(log.events)


def head(status: int, reason: bytes, cl: int | None = None, chunked: bool = False, ka: bool = True,
         until_close: bool = False, kind: str = "head") -> tuple[Any, ...]:
    return (kind, status, reason, cl, chunked, ka, until_close)


VALID_RESPONSES: list[tuple[str, list[bytes], bytes, bool, list[tuple[Any, ...]]]] = [
    ("content-length", [b"GET"], b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", False,
     [head(200, b"OK", 2), ("body", b"hi"), ("end",)]),
    ("head-has-no-body", [b"HEAD", b"GET"],
     b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 1\r\n\r\nx", False,
     [head(200, b"OK", 10), ("end",), head(404, b"Not Found", 1), ("body", b"x"), ("end",)]),
    ("head-chunked-has-no-body", [b"HEAD"], b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", False,
     [head(200, b"OK", None, True), ("end",)]),
    ("204", [b"DELETE", b"GET"],
     b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", False,
     [head(204, b"No Content"), ("end",), head(200, b"OK", 0), ("end",)]),
    ("304", [b"GET"], b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n", False,
     [head(304, b"Not Modified", 50), ("end",)]),
    ("100-then-final", [b"PUT"],
     b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
     False, [head(100, b"Continue", kind="info"), head(102, b"Processing", kind="info"),
             head(201, b"Created", 0), ("end",)]),
    ("chunked", [b"GET"], b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\nhi\r\n0\r\nT: 1\r\n\r\n",
     False, [head(200, b"OK", None, True), ("body", b"2;x=y\r\nhi\r\n0\r\nT: 1\r\n\r\n"), ("end",)]),
    ("until-close", [b"GET"], b"HTTP/1.1 200 OK\r\n\r\nall of it", True,
     [head(200, b"OK", None, False, False, True), ("body", b"all of it"), ("end",)]),
    ("until-close-empty", [b"GET"], b"HTTP/1.0 200 OK\r\n\r\n", True,
     [head(200, b"OK", None, False, False, True), ("end",)]),
    ("te-without-chunked-until-close", [b"GET"], b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz", True,
     [head(200, b"OK", None, False, False, True), ("body", b"zz"), ("end",)]),
    ("no-reason", [b"GET"], b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", False, [head(200, b"", 0), ("end",)]),
    ("empty-reason", [b"GET"], b"HTTP/1.1 500 \r\nContent-Length: 0\r\n\r\n", False, [head(500, b"", 0), ("end",)]),
    ("http10-keep-alive", [b"GET"], b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
     False, [head(200, b"OK", 0, ka=True), ("end",)]),
    ("http10-close", [b"GET"], b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False,
     [head(200, b"OK", 0, ka=False), ("end",)]),
    ("connection-close", [b"GET"], b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", False,
     [head(200, b"OK", 0, ka=False), ("end",)]),
    ("connect-refused-has-body", [b"CONNECT"], b"HTTP/1.1 403 Forbidden\r\nContent-Length: 1\r\n\r\nx", False,
     [head(403, b"Forbidden", 1), ("body", b"x"), ("end",)]),
]


@pytest.mark.parametrize("name,methods,wire,eof,expected", VALID_RESPONSES, ids=[r[0] for r in VALID_RESPONSES])
def test_valid_response(name: str, methods: list[bytes], wire: bytes, eof: bool,
                        expected: list[tuple[Any, ...]]) -> None:
    """A valid response stream yields the expected events, whole and byte by byte."""
    assert responses(methods, wire, eof) == expected
    assert responses(methods, wire, eof, bytewise=True) == expected


def test_101_stops_parser_and_keeps_tunnel_bytes() -> None:
    """After a 101 the parser stops; the bytes after the head are left for take_buffer()."""
    log = ResponseLog()
    p = ResponseParser(log)
    p.expect(b"GET")
    p.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x02hi")
    p.feed(b"HTTP/1.1 200 OK\r\n\r\n")
    assert summary(log.events) == [head(101, b"Switching Protocols")]
    assert p.take_buffer() == b"\x81\x02hiHTTP/1.1 200 OK\r\n\r\n"
    p.feed_eof()
    assert len(log.events) == 1


def test_take_buffer_inside_101_callback() -> None:
    """Inside response_head for a 101, take_buffer() already returns the tunnel bytes of that feed."""
    got = []

    class Log(ResponseLog):
        def response_head(self, head: ResponseHead) -> None:
            got.append(p.take_buffer())

    p = ResponseParser(Log())
    p.expect(b"GET")
    p.feed(b"HTTP/1.1 101 Switching Protocols\r\n\r\ntunnel")
    assert got == [b"tunnel"]


def test_connect_2xx_stops_parser() -> None:
    """A 2xx to CONNECT is a tunnel: no body framing, bytes kept for take_buffer()."""
    log = ResponseLog()
    p = ResponseParser(log)
    p.expect(b"CONNECT")
    p.feed(b"HTTP/1.1 200 Connection established\r\nContent-Length: 5\r\n\r\n\x16\x03")
    assert summary(log.events) == [head(200, b"Connection established", 5)]
    assert p.take_buffer() == b"\x16\x03"


def test_101_to_request_without_upgrade_rejected() -> None:
    """A 101 answering a request that asked no upgrade is an invalid response."""
    log = ResponseLog()
    p = ResponseParser(log)
    p.expect(b"GET", upgrade=False)
    p.feed(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
    assert log.events == [("error", "101 response to a request without Upgrade")]


def test_until_close_head_flags() -> None:
    """A read-until-close response says so and is never keep-alive."""
    log = ResponseLog()
    p = ResponseParser(log)
    p.expect(b"GET")
    p.feed(b"HTTP/1.1 200 OK\r\n\r\n")
    h = log.events[0][1]
    assert (h.body_until_close, h.keep_alive) == (True, False)


MALFORMED_RESPONSES: list[tuple[str, bytes, str]] = [
    ("garbage", b"HELLO WORLD\r\n\r\n", "invalid status line"),
    ("http09-body", b"<html>hi</html>\r\n\r\n", "invalid status line"),
    ("two-digit-status", b"HTTP/1.1 20 OK\r\n\r\n", "invalid status line"),
    ("four-digit-status", b"HTTP/1.1 2000 OK\r\n\r\n", "invalid status line"),
    ("status-below-100", b"HTTP/1.1 099 Odd\r\n\r\n", "invalid status line"),
    ("no-space-before-reason", b"HTTP/1.1 200OK\r\n\r\n", "invalid status line"),
    ("double-space", b"HTTP/1.1  200 OK\r\n\r\n", "invalid status line"),
    ("http2", b"HTTP/2 200 OK\r\n\r\n", "invalid status line"),
    ("leading-crlf", b"\r\nHTTP/1.1 200 OK\r\n\r\n", "invalid status line"),
    ("cl-and-te", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
     "both Content-Length and Transfer-Encoding"),
    ("two-cl", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", "multiple Content-Length headers"),
    ("bad-cl", b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n", "invalid Content-Length"),
    ("te-http10", b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "Transfer-Encoding in an HTTP/1.0 response"),
    ("chunked-not-last", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
     "Transfer-Encoding must end with a single chunked"),
    ("bare-lf", b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", "bare LF in head"),
    ("nul", b"HTTP/1.1 200 O\x00K\r\n\r\n", "control character in head"),
    ("obs-fold", b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", "obsolete line folding in head"),
    ("space-before-colon", b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n", "whitespace before colon in header"),
    ("bad-chunk", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "invalid chunk size"),
]


@pytest.mark.parametrize("name,wire,reason", MALFORMED_RESPONSES, ids=[r[0] for r in MALFORMED_RESPONSES])
def test_malformed_response(name: str, wire: bytes, reason: str) -> None:
    """An invalid response ends in response_error, whole and byte by byte, with no head before a head error."""
    expected_whole = responses([b"GET"], wire)
    assert expected_whole[-1] == ("error", reason)
    if name != "bad-chunk":
        assert expected_whole == [("error", reason)]
    assert responses([b"GET"], wire, bytewise=True) == expected_whole


def test_response_head_limit() -> None:
    """A response head over max_header_size is an invalid response as soon as the limit is reached."""
    log = ResponseLog()
    p = ResponseParser(log, max_header_size=100)
    p.expect(b"GET")
    p.feed(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 79)          # 99 bytes
    assert log.events == []
    p.feed(b"a")
    assert log.events == [("error", "response head too large")]


def test_content_length_short_at_eof() -> None:
    """The server closing before Content-Length bytes arrived is an error after the body seen."""
    assert responses([b"GET"], b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", eof=True) == [
        head(200, b"OK", 10), ("body", b"abc"),
        ("error", "server closed the connection in the middle of the response body")]


def test_chunked_unfinished_at_eof() -> None:
    """The server closing inside a chunked body is an error."""
    events = responses([b"GET"], b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", eof=True)
    assert events[-1] == ("error", "server closed the connection in the middle of the response body")


def test_eof_without_response() -> None:
    """The server closing with a request outstanding and nothing sent has its own reason."""
    assert responses([b"GET"], b"", eof=True) == [("error", "server closed the connection without a response")]


def test_eof_in_response_head() -> None:
    """The server closing inside a response head is an error."""
    assert responses([b"GET"], b"HTTP/1.1 200 OK\r\n", eof=True) == [
        ("error", "server closed the connection in the middle of the response head")]


def test_eof_idle_is_clean() -> None:
    """An idle server connection closing is no event."""
    assert responses([], b"", eof=True) == []


def test_unsolicited_response_rejected() -> None:
    """Bytes from a server with no request outstanding are an error, not the next answer."""
    assert responses([], b"HTTP/1.1 408 Request Timeout\r\n\r\n") == [("error", "unsolicited data from the server")]


def test_bytes_after_last_expected_response_rejected() -> None:
    """A server sending more than the response to the one request is caught."""
    assert responses([b"GET"], b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nX") == [
        head(200, b"OK", 0), ("end",), ("error", "unsolicited data from the server")]


def test_expect_after_response_end_continues() -> None:
    """Arming inside response_end for a pipelined request parses the response already buffered."""

    class Log(ResponseLog):
        def response_end(self) -> None:
            super().response_end()
            if len(self.events) == 2:
                p.expect(b"GET")

    log = Log()
    p = ResponseParser(log)
    p.expect(b"GET")
    p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
    assert summary(log.events) == [head(200, b"OK", 0), ("end",), head(201, b"Created", 0), ("end",)]


def test_response_pause_resume() -> None:
    """A paused response parser buffers body bytes and delivers them on resume()."""
    log = ResponseLog()
    p = ResponseParser(log)
    p.expect(b"GET")
    p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
    p.pause()
    p.feed(b"da")
    p.feed(b"ta")
    assert p.buffered == 4
    assert len(log.events) == 1
    p.resume()
    assert log.events[1:] == [("body", b"data"), ("end",)]


def test_response_pause_in_head_holds_body() -> None:
    """Paused in response_head, the body that came with the head waits for resume()."""

    class Log(ResponseLog):
        def response_head(self, head: ResponseHead) -> None:
            super().response_head(head)
            p.pause()

    log = Log()
    p = ResponseParser(log)
    p.expect(b"GET")
    p.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n")
    assert [e[0] for e in log.events] == ["head"]
    assert p.buffered == 11
    p.resume()
    assert log.events[1:] == [("body", b"1\r\nx\r\n0\r\n\r\n"), ("end",)]
