"""Client and server deadlines on a task clock: 408, 504, keep-alive idle, tunnels, no timer churn."""
from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from lbd.http.errors import render
from tests.http.harness import GET, ONE_SERVER, Harness, response

PAGE_408 = render(408, {}, close=True)
PAGE_504 = render(504, {}, close=True)


class ClientTimerTests(SynchronousTestCase):
    def test_slow_head_gets_408(self) -> None:
        """A head still incomplete timeout.http_request after its first byte gets 408 and a close."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n")
        h.reactor.advance(9.999)
        session.dataReceived(b"X-Slow: 1\r\n")
        self.assertEqual(client.value(), b"")
        h.reactor.advance(0.002)
        self.assertEqual(client.value(), PAGE_408)
        self.assertTrue(client.write_closed)
        self.assertEqual(h.connects(), [])
        self.assertEqual(h.access_lines(), ['f f/<NOSRV> -1/-1/-1/-1/10000 408 %d - - cR-- 1/1/0/0/0 0/0 "<BADREQ>"'
                                            % len(PAGE_408)])

    def test_first_request_deadline_runs_from_accept(self) -> None:
        """On a new connection timeout.http_request counts from the accept, not from the first byte."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        h.reactor.advance(6.0)
        session.dataReceived(b"GET / HTTP/1.1\r\n")
        h.reactor.advance(3.999)
        self.assertEqual(client.value(), b"")
        h.reactor.advance(0.002)
        self.assertEqual(client.value(), PAGE_408)

    def test_silent_new_connection_is_closed_quietly(self) -> None:
        """A connection that sends nothing within timeout.http_request is closed without a 408 or a log line."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        h.reactor.advance(9.999)
        self.assertFalse(client.disconnecting)
        h.reactor.advance(0.002)
        self.assertTrue(client.disconnecting)
        self.assertEqual(client.value(), b"")
        self.assertEqual(h.access_lines(), [])

    def test_keep_alive_idle_close(self) -> None:
        """An idle keep-alive connection is closed quietly after timeout.keep_alive."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(GET)
        proto, _ = h.accept()
        proto.dataReceived(response())
        client.clear()
        h.reactor.advance(4.999)
        self.assertFalse(client.disconnecting)
        h.reactor.advance(0.002)
        self.assertTrue(client.disconnecting)
        self.assertEqual(client.value(), b"")

    def test_keep_alive_wait_then_slow_head(self) -> None:
        """After a keep-alive wait, a new request's head has timeout.http_request from its first byte."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(GET)
        proto, _ = h.accept()
        proto.dataReceived(response())
        client.clear()
        h.reactor.advance(4.0)
        session.dataReceived(b"GET / HTTP/1.1\r\n")
        h.reactor.advance(9.999)
        self.assertEqual(client.value(), b"")
        h.reactor.advance(0.002)
        self.assertEqual(client.value(), PAGE_408)

    def test_stalled_request_body_gets_408(self) -> None:
        """A client that stops sending its body for timeout.client gets 408 and a close."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
        _, server = h.accept()
        h.reactor.advance(29.9)
        session.dataReceived(b"de")
        h.reactor.advance(29.9)
        self.assertEqual(client.value(), b"")
        h.reactor.advance(0.2)
        self.assertEqual(client.value(), PAGE_408)
        self.assertTrue(server.aborted)

    def test_client_not_reading_is_cut_after_timeout_client(self) -> None:
        """A client that stops reading a response (its buffer full) is cut after timeout.client."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(GET)
        proto, server = h.accept()
        proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        session.pauseProducing()      # what the client transport does when its buffer is full
        h.reactor.advance(29.9)       # lbd waits on the client: timeout.server (20s) does not apply
        self.assertFalse(server.aborted)
        self.assertFalse(client.aborted)
        h.reactor.advance(0.2)
        self.assertTrue(client.aborted)
        self.assertTrue(server.aborted)


class ServerTimerTests(SynchronousTestCase):
    def test_slow_server_gets_504(self) -> None:
        """No response head within timeout.server gives 504; the server connection is dropped."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(GET)
        proto, server = h.accept()
        h.reactor.advance(19.999)
        self.assertEqual(client.value(), b"")
        h.reactor.advance(0.002)
        self.assertEqual(client.value(), render(504, {}, close=False))
        self.assertTrue(server.aborted)
        self.assertEqual(h.server("s1").idle, [])
        self.assertFalse(client.disconnecting)
        self.assertEqual(h.access_lines(), ['f b/s1 0/0/0/-1/20000 504 %d - - sH-- 1/1/1/1/0 0/0 "GET / HTTP/1.1"'
                                            % len(render(504, {}, close=False))])

    def test_server_activity_keeps_the_exchange_alive(self) -> None:
        """timeout.server is an inactivity timer: each body read moves it on."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(GET)
        proto, _ = h.accept()
        proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n")
        for part in (b"a", b"b"):
            h.reactor.advance(15.0)
            proto.dataReceived(part)
        h.reactor.advance(15.0)
        proto.dataReceived(b"c")
        self.assertTrue(client.value().endswith(b"abc"))
        self.assertFalse(client.disconnecting)

    def test_stalled_response_body_cuts_both_sides(self) -> None:
        """A server that stops in the middle of a body for timeout.server is cut, and so is the client."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(GET)
        proto, server = h.accept()
        proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        h.reactor.advance(20.001)
        self.assertTrue(server.aborted)
        self.assertTrue(client.aborted)
        self.assertEqual(h.access_lines()[-1][-35:], 'sD-- 1/1/1/1/0 0/0 "GET / HTTP/1.1"')


class TimerChurnTests(SynchronousTestCase):
    def test_keep_alive_requests_create_no_timers(self) -> None:
        """Steady keep-alive traffic on pooled connections schedules no new timed calls per request."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(GET)
        proto, _ = h.accept()
        proto.dataReceived(response())
        before = list(h.reactor.getDelayedCalls())
        for _ in range(50):
            h.reactor.advance(0.001)
            session.dataReceived(GET)
            proto.dataReceived(response())
        self.assertEqual(list(h.reactor.getDelayedCalls()), before)
        self.assertEqual(client.value().count(b"hello"), 51)
