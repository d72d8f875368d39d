"""tcp and http probes: in memory on a MemoryReactorClock (exact bytes and times), then over real loopback sockets."""
from __future__ import annotations

import errno
import socket
from typing import Any

from twisted.internet import defer, reactor as _reactor, task
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from lbd.config import HealthConfig
from lbd.health.probes import CHECK_BUFFER, CheckResult, Target, http_probe, make_probe, tcp_probe
from lbd.testing import FakeTCPTransport, free_port

reactor: Any = _reactor

TARGET = Target("127.0.0.1", 8080, 2.0)


def default_http(expect_body: str | None = None, status: tuple[int, int] = (200, 399),
                 method: str = "GET", path: str = "/", host: str | None = None) -> Any:
    return http_probe(method, path, host, status, expect_body)


class InMemory:
    """One probe on a MemoryReactorClock, its connection a FakeTCPTransport."""

    def __init__(self, probe: Any, target: Target = TARGET) -> None:
        self.reactor = MemoryReactorClock()
        self.d: defer.Deferred[CheckResult] = probe(self.reactor, target)
        self.host, self.port, self.factory, _, _ = self.reactor.tcpClients[0]
        self.connector = self.reactor.connectors[0]
        self.proto: Any = None
        self.transport = FakeTCPTransport()

    def connect(self) -> FakeTCPTransport:
        self.proto = self.factory.buildProtocol(None)
        self.proto.makeConnection(self.transport)
        return self.transport

    def feed(self, data: bytes, byte_by_byte: bool = False) -> None:
        if byte_by_byte:
            for i in range(len(data)):
                self.proto.dataReceived(data[i:i + 1])
        else:
            self.proto.dataReceived(data)

    def close(self, reason: Failure | None = None) -> None:
        from twisted.internet.error import ConnectionDone

        self.proto.connectionLost(reason or Failure(ConnectionDone()))

    def result(self) -> CheckResult | None:
        out: list[CheckResult] = []

        def keep(r: CheckResult) -> CheckResult:
            out.append(r)
            return r

        self.d.addCallback(keep)
        return out[0] if out else None


def summary(r: CheckResult | None) -> tuple[str, int | None, str] | None:
    return None if r is None else (r.status, r.code, r.desc)


class TCPProbeTests(SynchronousTestCase):
    """The tcp probe: a connection is all it asks."""

    def test_connect_passes(self) -> None:
        """An accepted connection is L4OK, and the check closes it at once (reset, as HAProxy)."""
        m = InMemory(tcp_probe)
        m.reactor.advance(0.001)
        t = m.connect()
        self.assertEqual(summary(m.result()), ("L4OK", None, ""))
        self.assertTrue(t.aborted)
        self.assertEqual(m.result().duration, 0.001)  # type: ignore[union-attr]

    def test_connects_to_target(self) -> None:
        """The probe connects to the target's address and port."""
        m = InMemory(tcp_probe, Target("10.1.2.3", 9200, 1.0))
        self.assertEqual((m.host, m.port), ("10.1.2.3", 9200))

    def test_refused(self) -> None:
        """A refused connection is L4CON with strerror's text."""
        m = InMemory(tcp_probe)
        m.factory.clientConnectionFailed(m.connector, Failure(ConnectionRefusedError(errno.ECONNREFUSED, "x")))
        self.assertEqual(summary(m.result()), ("L4CON", None, "Connection refused"))

    def test_connect_timeout(self) -> None:
        """No connection within the timeout is L4TOUT at exactly the timeout, and the attempt stops."""
        m = InMemory(tcp_probe)
        m.reactor.advance(1.999)
        self.assertIsNone(m.result())
        m.reactor.advance(0.001)
        r = m.result()
        self.assertEqual((summary(r), r.duration if r else None), (("L4TOUT", None, ""), 2.0))
        self.assertTrue(m.connector.stoppedConnecting)
        self.assertEqual(m.reactor.getDelayedCalls(), [])

    def test_late_connection_after_timeout_is_dropped(self) -> None:
        """A connection completing after the verdict is closed and changes nothing."""
        m = InMemory(tcp_probe)
        m.reactor.advance(2.0)
        t = m.connect()
        self.assertTrue(t.aborted)
        self.assertEqual(summary(m.result()), ("L4TOUT", None, ""))

    def test_cancel_stops_connecting(self) -> None:
        """Cancelling the probe's Deferred stops the attempt and its timer."""
        m = InMemory(tcp_probe)
        m.d.addErrback(lambda f: f.trap(defer.CancelledError))
        m.d.cancel()
        self.assertTrue(m.connector.stoppedConnecting)
        self.assertEqual(m.reactor.getDelayedCalls(), [])


OK_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 7\r\n\r\nall OK\n"


class HTTPProbeTests(SynchronousTestCase):
    """The http probe: request, status, body, framing, limits, timeouts."""

    def run_http(self, response: bytes, byte_by_byte: bool = False, close: bool = False,
                 **kw: Any) -> CheckResult | None:
        m = InMemory(default_http(**kw))
        m.connect()
        m.feed(response, byte_by_byte)
        if close and m.result() is None:
            m.close()
        return m.result()

    def both(self, response: bytes, close: bool = False, **kw: Any) -> tuple[str, int | None, str] | None:
        """The verdict on ``response`` fed whole, asserted equal when fed byte by byte."""
        whole = summary(self.run_http(response, False, close, **kw))
        self.assertEqual(summary(self.run_http(response, True, close, **kw)), whole)
        return whole

    def test_request_bytes(self) -> None:
        """The request is METHOD PATH HTTP/1.1 with Host, Connection: close and a User-Agent."""
        m = InMemory(default_http(method="HEAD", path="/health?full=1", host="example.com"))
        t = m.connect()
        self.assertEqual(t.value(), b"HEAD /health?full=1 HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n"
                                    b"User-Agent: lbd-health-check\r\n\r\n")

    def test_default_host_is_target(self) -> None:
        """Without ``host``, the Host header names the checked address (IPv6 in brackets)."""
        hosts = []
        for target in (Target("127.0.0.1", 8080, 1.0), Target("::1", 80, 1.0)):
            m = InMemory(default_http(), target)
            hosts.append(m.connect().value().split(b"\r\n")[1])
        self.assertEqual(hosts, [b"Host: 127.0.0.1:8080", b"Host: [::1]:80"])

    def test_ok(self) -> None:
        """A 200 is L7OK with the code and the reason phrase."""
        self.assertEqual(self.both(OK_RESPONSE), ("L7OK", 200, "OK"))

    def test_ok_decided_on_status_line(self) -> None:
        """Without a body to look for, the verdict comes with the status line; the connection is reset."""
        m = InMemory(default_http())
        t = m.connect()
        m.feed(b"HTTP/1.0 204 No Content\r\n")
        self.assertEqual(summary(m.result()), ("L7OK", 204, "No Content"))
        self.assertTrue(t.aborted)

    def test_statuses(self) -> None:
        """Statuses inside expect_status pass, others are L7STS with their reason."""
        table = [
            ((200, 399), b"HTTP/1.1 302 Found\r\n\r\n", ("L7OK", 302, "Found")),
            ((200, 399), b"HTTP/1.1 404 Not Found\r\n\r\n", ("L7STS", 404, "Not Found")),
            ((200, 399), b"HTTP/1.1 503 Service Unavailable\r\n\r\n", ("L7STS", 503, "Service Unavailable")),
            ((200, 200), b"HTTP/1.1 201 Created\r\n\r\n", ("L7STS", 201, "Created")),
            ((500, 599), b"HTTP/1.1 500 Internal Server Error\r\n\r\n", ("L7OK", 500, "Internal Server Error")),
            ((200, 399), b"HTTP/1.1 200\r\n\r\n", ("L7OK", 200, "")),
            ((200, 399), b"HTTP/1.1 200 OK\n\n", ("L7OK", 200, "OK")),
        ]
        for status, response, expected in table:
            self.assertEqual(self.both(response, status=status), expected, response)

    def test_garbage(self) -> None:
        """Anything but an HTTP status line is L7RSP, whole or byte by byte."""
        for response in (b"SSH-2.0-OpenSSH_9.2\r\n", b"\x00\x01\x02\xff\n", b"HTTP/1.1 2000 OK\r\n",
                         b"HTTP/1.1 abc OK\r\n", b"ICY 200 OK\r\n", b"HTTP/11 200 OK\r\n", b"\r\n"):
            self.assertEqual(self.both(response), ("L7RSP", None, "Invalid HTTP status line"), response)

    def test_endless_status_line(self) -> None:
        """A status line longer than the check buffer is L7RSP without reading further."""
        m = InMemory(default_http())
        t = m.connect()
        m.feed(b"HTTP/1.1 200 " + b"x" * CHECK_BUFFER)
        self.assertEqual(summary(m.result()), ("L7RSP", None, "Invalid HTTP status line"))
        self.assertTrue(t.aborted)

    def test_reason_made_printable(self) -> None:
        """Control and non-ASCII bytes of a reason phrase are shown as '?'."""
        self.assertEqual(self.both(b"HTTP/1.1 503 Bad\x01\xe9\r\n\r\n"), ("L7STS", 503, "Bad??"))

    def test_body_found(self) -> None:
        """expect_body found in a Content-Length body passes."""
        self.assertEqual(self.both(OK_RESPONSE, expect_body="OK"), ("L7OK", 200, "OK"))

    def test_body_not_found(self) -> None:
        """A complete body without expect_body is L7RSP naming the text looked for."""
        self.assertEqual(self.both(OK_RESPONSE, expect_body="READY"),
                         ("L7RSP", 200, "HTTP content check did not match 'READY'"))

    def test_body_status_checked_first(self) -> None:
        """A wrong status fails as L7STS even if the body would match."""
        self.assertEqual(self.both(b"HTTP/1.1 500 Oops\r\nContent-Length: 2\r\n\r\nOK", expect_body="OK"),
                         ("L7STS", 500, "Oops"))

    def test_body_chunked(self) -> None:
        """A chunked body is decoded: text split across chunks is found, chunk sizes are not searched."""
        resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nREA\r\n2\r\nDY\r\n0\r\n\r\n"
        self.assertEqual(self.both(resp, expect_body="READY"), ("L7OK", 200, "OK"))
        self.assertEqual(self.both(resp, expect_body="A\r\n2"), ("L7RSP", 200, "HTTP content check did not match 'A\r\n2'"))

    def test_body_bad_chunk(self) -> None:
        """A malformed chunk size is L7RSP."""
        resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nREADY\r\n"
        self.assertEqual(self.both(resp, expect_body="READY"), ("L7RSP", 200, "Invalid HTTP chunk size"))

    def test_body_until_close(self) -> None:
        """Without framing the body runs to the close; no match by then is L7RSP."""
        resp = b"HTTP/1.0 200 OK\r\n\r\nhello"
        self.assertEqual(self.both(resp, close=True, expect_body="hello"), ("L7OK", 200, "OK"))
        self.assertEqual(self.both(resp, close=True, expect_body="bye"),
                         ("L7RSP", 200, "HTTP content check did not match 'bye'"))

    def test_body_beyond_buffer_not_seen(self) -> None:
        """Text past the first 16 KiB of body is not looked at, and the check does not wait for more."""
        resp = b"HTTP/1.1 200 OK\r\nContent-Length: 40000\r\n\r\n" + b"." * CHECK_BUFFER + b"READY"
        self.assertEqual(self.both(resp, expect_body="READY"),
                         ("L7RSP", 200, "HTTP content check did not match 'READY'"))

    def test_head_too_large(self) -> None:
        """Headers beyond the check buffer are L7RSP."""
        resp = b"HTTP/1.1 200 OK\r\nX: " + b"y" * CHECK_BUFFER
        self.assertEqual(summary(self.run_http(resp, expect_body="x")), ("L7RSP", 200, "HTTP response head too large"))

    def test_head_request_has_no_body(self) -> None:
        """A HEAD response has no body, so an expect_body cannot match (and is not waited for)."""
        m = InMemory(default_http(method="HEAD", expect_body="OK"))
        m.connect()
        m.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        self.assertEqual(summary(m.result()), ("L7RSP", 200, "HTTP content check did not match 'OK'"))

    def test_closed_without_response(self) -> None:
        """A close before any byte is L7RSP 'empty response'; mid-head, 'incomplete HTTP response'."""
        m = InMemory(default_http())
        m.connect()
        m.close()
        self.assertEqual(summary(m.result()), ("L7RSP", None, "empty response"))
        m = InMemory(default_http(expect_body="x"))
        m.connect()
        m.feed(b"HTTP/1.1 200 OK\r\nContent-")
        m.close()
        self.assertEqual(summary(m.result()), ("L7RSP", 200, "incomplete HTTP response"))

    def test_reset(self) -> None:
        """A connection reset before the answer is L7RSP with the error."""
        m = InMemory(default_http())
        m.connect()
        m.close(Failure(ConnectionLost()))
        self.assertEqual(summary(m.result()),
                         ("L7RSP", None, "Connection to the other side was lost in a non-clean fashion"))

    def test_silent_server_times_out(self) -> None:
        """A server that accepts and never answers is L7TOUT at exactly the timeout; the connection is reset."""
        m = InMemory(default_http())
        t = m.connect()
        m.reactor.advance(1.999)
        m.feed(b"HTTP/1.1 2")
        self.assertIsNone(m.result())
        m.reactor.advance(0.001)
        r = m.result()
        self.assertEqual((summary(r), r.duration if r else None), (("L7TOUT", None, ""), 2.0))
        self.assertTrue(t.aborted)

    def test_data_after_verdict_ignored(self) -> None:
        """Bytes arriving after the verdict change nothing."""
        m = InMemory(default_http())
        m.connect()
        m.feed(b"HTTP/1.1 200 OK\r\n")
        m.feed(b"garbage\r\n")
        m.close()
        self.assertEqual(summary(m.result()), ("L7OK", 200, "OK"))

    def test_make_probe_types(self) -> None:
        """make_probe builds each configured type and refuses others."""
        for kind in ("tcp", "http", "mysql"):
            self.assertTrue(callable(make_probe(HealthConfig(type=kind))))
        self.assertTrue(callable(make_probe(HealthConfig(type="galera", user="u"))))
        self.assertRaises(ValueError, make_probe, HealthConfig(type="ldap"))


class CheckResultTests(SynchronousTestCase):
    """The reason text that lands in HAProxy's log line."""

    def test_reasons(self) -> None:
        """Status description, code (layer 7 results), quoted info, duration in whole milliseconds."""
        table = [
            (CheckResult("L4CON", None, "Connection refused", 0.0012), 'Layer4 connection problem, info: "Connection refused", check duration: 1ms'),
            (CheckResult("L4TOUT", None, "", 2.0), "Layer4 timeout, check duration: 2000ms"),
            (CheckResult("L7STS", 503, "Service Unavailable", 0.0029), 'Layer7 wrong status, code: 503, info: "Service Unavailable", check duration: 2ms'),
            (CheckResult("L7RSP", 200, 'say "hi"\n', 0.0), 'Layer7 invalid response, info: "say \\x22hi\\x22\\x0a", check duration: 0ms'),
        ]
        for result, text in table:
            self.assertEqual(result.reason(), text)

    def test_passed(self) -> None:
        """L4OK, L6OK, L7OK and L7OKC pass; the rest fail."""
        passed = [s for s in ("L4OK", "L4TOUT", "L4CON", "L6OK", "L6TOUT", "L6RSP", "L7OK", "L7OKC", "L7STS",
                              "L7RSP", "L7TOUT", "SOCKERR") if CheckResult(s, None, "", 0).passed]
        self.assertEqual(passed, ["L4OK", "L6OK", "L7OK", "L7OKC"])


# -- real sockets --------------------------------------------------------------------------


class Scripted(Protocol):
    """Answers with ``response`` (after the request head if ``wait_request``), optionally a byte at a time."""

    def connectionMade(self) -> None:
        self.received = b""
        self.factory.conns.append(self)  # type: ignore[attr-defined]
        if not self.factory.wait_request:  # type: ignore[attr-defined]
            self.answer()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self.factory.requests.append(data)  # type: ignore[attr-defined]
        if self.factory.wait_request and b"\r\n\r\n" in self.received:  # type: ignore[attr-defined]
            self.factory.wait_request = False  # type: ignore[attr-defined]
            self.answer()

    def answer(self) -> None:
        f: Any = self.factory
        if f.response is None:
            return                        # blackhole: accept, never answer
        if f.byte_delay:
            self._calls = [reactor.callLater(f.byte_delay * i, self.transport.write, f.response[i:i + 1])
                           for i in range(len(f.response))]
            if f.close:
                self._calls.append(reactor.callLater(f.byte_delay * len(f.response), self.transport.loseConnection))
        else:
            self.transport.write(f.response)
            if f.close:
                self.transport.loseConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        for c in getattr(self, "_calls", []):
            if c.active():
                c.cancel()


class ScriptedServer(Factory):
    noisy = False
    protocol = Scripted

    def __init__(self, response: bytes | None, wait_request: bool = True, byte_delay: float = 0.0,
                 close: bool = True) -> None:
        self.response = response
        self.wait_request = wait_request
        self.byte_delay = byte_delay
        self.close = close
        self.requests: list[bytes] = []
        self.conns: list[Scripted] = []


class RealSocketTests(TestCase):
    """Probes against scripted servers on 127.0.0.1."""

    timeout = 20

    def listen(self, server: ScriptedServer) -> int:
        port = reactor.listenTCP(0, server, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: [c.transport.abortConnection() for c in server.conns if c.transport])
        return int(port.getHost().port)

    async def check(self, probe: Any, server: ScriptedServer | None, timeout: float = 2.0) -> CheckResult:
        port = self.listen(server) if server is not None else free_port()
        result: CheckResult = await probe(reactor, Target("127.0.0.1", port, timeout))
        # let the probe's close reach the server before the test's cleanup
        await task.deferLater(reactor, 0.01, lambda: None)
        return result

    @defer.inlineCallbacks
    def test_tcp_up_and_refused(self) -> Any:
        """A listening port is L4OK; a closed one is L4CON 'Connection refused'."""
        ok = yield defer.ensureDeferred(self.check(tcp_probe, ScriptedServer(None)))
        refused = yield defer.ensureDeferred(self.check(tcp_probe, None))
        self.assertEqual([summary(ok), summary(refused)],
                         [("L4OK", None, ""), ("L4CON", None, "Connection refused")])

    @defer.inlineCallbacks
    def test_http_good(self) -> Any:
        """A real 200 with the expected body passes; the server saw one well-formed request."""
        server = ScriptedServer(OK_RESPONSE)
        r = yield defer.ensureDeferred(self.check(default_http(expect_body="OK", path="/ping"), server))
        self.assertEqual(summary(r), ("L7OK", 200, "OK"))
        self.assertTrue(b"".join(server.requests).startswith(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1:"))

    @defer.inlineCallbacks
    def test_http_bad_status_and_body(self) -> Any:
        """A 503 is L7STS; a 200 without the text is L7RSP."""
        bad = yield defer.ensureDeferred(self.check(default_http(), ScriptedServer(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")))
        body = yield defer.ensureDeferred(self.check(default_http(expect_body="READY"), ScriptedServer(OK_RESPONSE)))
        self.assertEqual([summary(bad), summary(body)], [
            ("L7STS", 503, "Service Unavailable"), ("L7RSP", 200, "HTTP content check did not match 'READY'")])

    @defer.inlineCallbacks
    def test_http_byte_by_byte(self) -> Any:
        """An answer trickling in one byte per write gives the same verdict."""
        r = yield defer.ensureDeferred(self.check(default_http(expect_body="OK"),
                                                  ScriptedServer(OK_RESPONSE, byte_delay=0.002)))
        self.assertEqual(summary(r), ("L7OK", 200, "OK"))

    @defer.inlineCallbacks
    def test_http_garbage(self) -> Any:
        """A server speaking something else is L7RSP."""
        r = yield defer.ensureDeferred(self.check(default_http(), ScriptedServer(b"\xff\xfe\x00garbage\n" * 3,
                                                                                 wait_request=False)))
        self.assertEqual(summary(r), ("L7RSP", None, "Invalid HTTP status line"))

    @defer.inlineCallbacks
    def test_http_blackhole_times_out(self) -> Any:
        """A server that accepts and never answers is L7TOUT after the check timeout, not later."""
        r = yield defer.ensureDeferred(self.check(default_http(), ScriptedServer(None), timeout=0.3))
        self.assertEqual(summary(r), ("L7TOUT", None, ""))
        self.assertTrue(0.29 <= r.duration < 1.5, r.duration)

    @defer.inlineCallbacks
    def test_http_closed_early(self) -> Any:
        """A server closing without answering is L7RSP 'empty response'."""
        r = yield defer.ensureDeferred(self.check(default_http(), ScriptedServer(b"")))
        self.assertEqual(summary(r), ("L7RSP", None, "empty response"))

    @defer.inlineCallbacks
    def test_tcp_connect_blackhole(self) -> Any:
        """A port whose accept queue is full drops the SYN (Linux): L4TOUT at the check timeout."""
        ls = socket.socket()
        self.addCleanup(ls.close)
        ls.bind(("127.0.0.1", 0))
        ls.listen(0)
        for _ in range(3):                     # fill the queue; nobody accepts
            s = socket.socket()
            self.addCleanup(s.close)
            s.setblocking(False)
            s.connect_ex(ls.getsockname())
        yield task.deferLater(reactor, 0.05, lambda: None)
        r = yield tcp_probe(reactor, Target("127.0.0.1", ls.getsockname()[1], 0.3))
        self.assertEqual(summary(r), ("L4TOUT", None, ""))
        self.assertTrue(0.29 <= r.duration < 1.5, r.duration)

    @defer.inlineCallbacks
    def test_tcp_ipv6(self) -> Any:
        """An IPv6 check address is connected to as such."""
        try:
            port = reactor.listenTCP(0, ScriptedServer(None), interface="::1")
        except Exception as e:
            raise SkipTest("no IPv6 loopback here: %s" % (e,))
        self.addCleanup(port.stopListening)
        r = yield tcp_probe(reactor, Target("::1", port.getHost().port, 1.0))
        self.assertEqual(summary(r), ("L4OK", None, ""))
