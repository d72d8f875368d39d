"""Properties of the HTTP/1.1 parsers: how input is split never changes what they report."""
from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lbd.http.parser import RequestParser, ResponseParser
from tests.http.test_parser import RequestLog, ResponseLog, merged

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'|`^#$%&+",
                 min_size=1, max_size=12).map(str.encode)
_VALUE = st.binary(max_size=30).map(lambda b: bytes(c for c in b if c == 9 or 32 <= c < 127 or c >= 128)
                                    .strip(b" \t"))
_PATH = st.text("abcdefghijklmnopqrstuvwxyz0123456789/-._~%?=&", max_size=20).map(lambda s: b"/" + s.encode())
_EXTRA = st.lists(st.tuples(_TOKEN.filter(lambda t: t.lower() not in {
    b"host", b"content-length", b"transfer-encoding", b"connection", b"expect", b"upgrade"}), _VALUE), max_size=4)


@st.composite
def chunked_body(draw: Any) -> bytes:
    """A valid chunked body: sizes in either case, optional extensions and trailers."""
    out = []
    for data in draw(st.lists(st.binary(min_size=1, max_size=40), max_size=5)):
        size = b"%x" % len(data)
        if draw(st.booleans()):
            size = size.upper()
        ext = draw(st.sampled_from([b"", b";a", b";a=b", b' ; q="x\\"y"', b";n=1;m"]))
        out.append(size + ext + b"\r\n" + data + b"\r\n")
    out.append(b"0\r\n")
    for name, value in draw(st.lists(st.tuples(_TOKEN, _VALUE), max_size=2)):
        out.append(name + b": " + value + b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


@st.composite
def request(draw: Any) -> tuple[bytes, list[tuple[Any, ...]]]:
    """One valid request on the wire, and the events it must produce."""
    kind = draw(st.sampled_from(["get", "cl", "chunked"]))
    path = draw(_PATH)
    lines = [(b"GET " if kind == "get" else b"POST ") + path + b" HTTP/1.1", b"Host: h"]
    lines += [n + b": " + v for n, v in draw(_EXTRA)]
    if kind == "get":
        body = b""
    elif kind == "cl":
        body = draw(st.binary(max_size=60))
        lines.append(b"Content-Length: %d" % len(body))
    else:
        body = draw(chunked_body())
        lines.append(b"Transfer-Encoding: chunked")
    wire = b"\r\n".join(lines) + b"\r\n\r\n"
    events: list[tuple[Any, ...]] = [("head", wire[:wire.index(b" ")], path, kind == "chunked", len(wire))]
    if body:
        events.append(("body", body))
    events.append(("end",))
    return wire + body, events


def _cuts(draw: Any, n: int) -> list[int]:
    return sorted(set(draw(st.lists(st.integers(0, n), max_size=30))))


def _feed_split(parser: Any, data: bytes, cuts: list[int]) -> None:
    prev = 0
    for c in cuts + [len(data)]:
        parser.feed(data[prev:c])
        prev = c


def _request_summary(events: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [("head", e[1].method, e[1].target, e[1].chunked, e[1].head_size) if e[0] == "head" else e
            for e in merged(events)]


@SETTINGS
@given(st.lists(request(), min_size=1, max_size=5), st.data())
def test_any_split_of_pipelined_requests_gives_the_same_events(reqs: Any, data: Any) -> None:
    """Pipelined valid requests, split anywhere, give exactly the events of the whole stream."""
    stream = b"".join(w for w, _ in reqs)
    expected = [e for _, evs in reqs for e in evs]
    whole = RequestLog()
    RequestParser(whole).feed(stream)
    assert _request_summary(whole.events) == expected
    split = RequestLog()
    _feed_split(RequestParser(split), stream, _cuts(data.draw, len(stream)))
    assert merged(split.events) == merged(whole.events)


@st.composite
def response(draw: Any) -> tuple[bytes, bytes, list[tuple[Any, ...]]]:
    """One valid response (with the method it answers) and its events."""
    kind = draw(st.sampled_from(["cl", "chunked", "head", "204", "100"]))
    method = b"HEAD" if kind == "head" else b"GET"
    pre = b""
    events: list[tuple[Any, ...]] = []
    if kind == "100":
        pre = b"HTTP/1.1 100 Continue\r\n\r\n"
        events.append(("info", 100))
    if kind == "chunked":
        body = draw(chunked_body())
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    elif kind == "204":
        body = b""
        head = b"HTTP/1.1 204 No Content\r\n\r\n"
    else:
        body = draw(st.binary(max_size=60)) if kind != "head" else b""
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(body) if kind != "head" else 99)
    events.append(("head", int(head[9:12])))
    if body:
        events.append(("body", body))
    events.append(("end",))
    return method, pre + head + body, events


def _response_summary(events: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [(e[0], e[1].status) if e[0] in ("head", "info") else e for e in merged(events)]


@SETTINGS
@given(st.lists(response(), min_size=1, max_size=5), st.data())
def test_any_split_of_responses_gives_the_same_events(resps: Any, data: Any) -> None:
    """Consecutive valid responses, split anywhere, give exactly the events of the whole stream."""
    stream = b"".join(w for _, w, _ in resps)
    expected = [e for _, _, evs in resps for e in evs]
    logs = []
    for cuts in ([], _cuts(data.draw, len(stream))):
        log = ResponseLog()
        p = ResponseParser(log)
        for m, _, _ in resps:
            p.expect(m)
        _feed_split(p, stream, cuts)
        logs.append(merged(log.events))
    assert _response_summary(logs[0]) == expected
    assert logs[1] == logs[0]


@SETTINGS
@given(st.binary(max_size=300), st.data())
def test_arbitrary_bytes_never_raise(junk: bytes, data: Any) -> None:
    """Any input at all, split anywhere, ends in at most one error, reported last."""
    for prefix in (b"", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"):
        log = RequestLog()
        p = RequestParser(log)
        stream = prefix + junk
        _feed_split(p, stream, _cuts(data.draw, len(stream)))
        p.feed_eof()
        errors = [i for i, e in enumerate(log.events) if e[0] == "error"]
        assert errors in ([], [len(log.events) - 1])
