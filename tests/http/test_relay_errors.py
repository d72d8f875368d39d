"""Errors lbd answers itself: 400/414/431 (bad requests), 502, 503, errorfiles, and their logs."""
from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from lbd.http.errors import render
from tests.http.harness import GET, ONE_SERVER, Harness, close, response


class BadRequestTests(SynchronousTestCase):
    def test_malformed_request_gets_400_and_nothing_is_connected(self) -> None:
        """A request with both Content-Length and Transfer-Encoding gets 400, a close, and no server connection."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc")
        self.assertEqual(client.value(), render(400, {}, close=True))
        self.assertTrue(client.write_closed)
        self.assertEqual(h.connects(), [])
        self.assertEqual(h.frontend.ereq, 1)
        self.assertEqual(h.access_lines(), ['f f/<NOSRV> -1/-1/-1/-1/0 400 %d - - PR-- 1/1/0/0/0 0/0 "<BADREQ>"'
                                            % len(render(400, {}, close=True))])

    def test_malformed_first_chunk_reaches_no_server(self) -> None:
        """A bad chunk size arriving with the head is rejected before any connection is made."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")
        self.assertEqual(client.value(), render(400, {}, close=True))
        self.assertEqual(h.connects(), [])

    def test_bad_chunk_later_aborts_the_server_side(self) -> None:
        """A bad chunk after the head was forwarded gets 400 and the server connection is cut."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        _, server = h.accept()
        session.dataReceived(b"zz\r\n")
        self.assertEqual(client.value(), render(400, {}, close=True))
        self.assertTrue(server.aborted)
        self.assertEqual(h.server("s1").cur_sess, 0)

    def test_long_request_line_gets_414(self) -> None:
        """A request line over the limit gets 414."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(b"GET /" + b"a" * 9000)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 414 URI Too Long\r\n"))

    def test_large_head_gets_431(self) -> None:
        """A head over max_header_size gets 431."""
        h = Harness(servers=ONE_SERVER, frontend="max_header_size = 1024")
        session, client = h.client()
        session.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 2000)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"))
        self.assertTrue(client.write_closed)

    def test_bad_request_after_a_good_one(self) -> None:
        """A malformed request following a good one on a keep-alive connection gets 400 after the first answer."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(GET + b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n")
        proto, _ = h.accept()
        proto.dataReceived(response())
        self.assertEqual(client.value(), response() + render(400, {}, close=True))


class ServerSideErrorTests(SynchronousTestCase):
    def test_no_backend_gives_503(self) -> None:
        """A frontend with no default_backend and no matching route answers 503 and keeps the connection."""
        h = Harness(servers=ONE_SERVER, default_backend="")
        session, client = h.client()
        session.dataReceived(GET)
        self.assertEqual(client.value(), render(503, {}, close=False))
        self.assertFalse(client.disconnecting)
        self.assertEqual(h.access_lines()[-1], 'f f/<NOSRV> 0/-1/-1/-1/0 503 %d - - SC-- 1/1/0/0/0 0/0 "GET / HTTP/1.1"'
                         % len(render(503, {}, close=False)))

    def test_503_on_a_body_request_closes(self) -> None:
        """When lbd answers before reading a request body, it closes the connection."""
        h = Harness(servers=ONE_SERVER, default_backend="")
        session, client = h.client()
        session.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc")
        self.assertEqual(client.value(), render(503, {}, close=True))
        self.assertTrue(client.write_closed)

    def test_connect_failures_give_503_after_retries(self) -> None:
        """When every connect attempt is refused, the client gets 503 (SC) after ``retries`` retries."""
        h = Harness(retries=2)
        session, client = h.client()
        session.dataReceived(GET)
        for _ in range(3):
            h.refuse()
        self.assertEqual(client.value(), render(503, {}, close=False))
        self.assertEqual(h.backend.econ, 3)
        self.assertEqual(h.access_lines()[-1], 'f b/<NOSRV> 0/0/-1/-1/0 503 %d - - SC-- 1/1/0/0/2 0/0 "GET / HTTP/1.1"'
                         % len(render(503, {}, close=False)))

    def test_queue_timeout_gives_503(self) -> None:
        """A request waiting for a full server longer than timeout.queue gets 503 (sQ)."""
        h = Harness(servers='s1 = { address = "127.0.0.1:9001", maxconn = 1 }')
        first, _ = h.client()
        first.dataReceived(GET)
        h.accept()
        second, client = h.client(peer=("10.0.0.2", 40001))
        second.dataReceived(GET)
        h.reactor.advance(3.001)
        self.assertEqual(client.value(), render(503, {}, close=False))
        self.assertIn(" sQ-- ", h.access_lines()[-1])

    def test_queued_request_takes_the_pooled_connection(self) -> None:
        """When a full server frees its slot, the queued request goes on the connection just pooled."""
        h = Harness(servers='s1 = { address = "127.0.0.1:9001", maxconn = 1 }')
        first, _ = h.client()
        first.dataReceived(GET)
        proto, server = h.accept()
        second, client = h.client(peer=("10.0.0.2", 40001))
        second.dataReceived(GET)
        server.clear()
        proto.dataReceived(response(b"first"))
        self.assertIn(b"X-Forwarded-For: 10.0.0.2", server.value())
        proto.dataReceived(response(b"second"))
        self.assertEqual(client.value(), response(b"second"))
        self.assertEqual(len(h.reactor.tcpClients), 1)

    def test_invalid_response_gives_502_and_drops_the_connection(self) -> None:
        """Garbage from a server gives the client 502; the server connection is cut, not pooled."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(GET)
        proto, server = h.accept()
        proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")
        self.assertEqual(client.value(), render(502, {}, close=False))
        self.assertTrue(server.aborted)
        self.assertEqual(h.server("s1").idle, [])
        self.assertEqual(h.backend.eresp, 1)
        self.assertIn(" PH-- ", h.access_lines()[-1])

    def test_errorfile_is_used(self) -> None:
        """A configured errorfile replaces the built-in page."""
        h = Harness(servers=ONE_SERVER, default_backend="")
        path = os.path.join(h.tmp, "503.http")
        with open(path, "wb") as f:
            f.write(b"HTTP/1.1 503 Service Unavailable\nContent-Type: text/plain\n\nback soon\n")
        h2 = Harness(servers=ONE_SERVER, default_backend="",
                     frontend='[frontends.f.errorfiles]\n503 = "%s"' % path)
        session, client = h2.client()
        session.dataReceived(GET)
        self.assertEqual(client.value(), b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                                         b"Content-Length: 10\r\n\r\nback soon\n")

    def test_backend_errorfile_wins_once_the_backend_is_known(self) -> None:
        """An error for a request routed to a backend uses that backend's errorfile."""
        h = Harness(servers=ONE_SERVER)
        path = os.path.join(h.tmp, "502.http")
        with open(path, "wb") as f:
            f.write(b"HTTP/1.1 502 Bad Gateway\n\nbackend page\n")
        h2 = Harness(servers=ONE_SERVER, backend='[backends.b.errorfiles]\n502 = "%s"' % path)
        session, client = h2.client()
        session.dataReceived(GET)
        proto, _ = h2.accept()
        proto.dataReceived(b"garbage\r\n\r\n")
        self.assertEqual(client.value(), b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 13\r\n\r\nbackend page\n")

    def test_error_for_head_has_no_body(self) -> None:
        """lbd's answer to a HEAD request carries no body."""
        h = Harness(servers=ONE_SERVER, default_backend="")
        session, client = h.client()
        session.dataReceived(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(client.value(), render(503, {}, close=False, head_only=True))

    def test_maxconn_refusal_answers_503(self) -> None:
        """A client beyond the frontend's maxconn gets 503 and a close."""
        h = Harness(servers=ONE_SERVER, frontend="maxconn = 1")
        h.client()
        _, client = h.client(peer=("10.0.0.2", 40001))
        self.assertEqual(client.value(), render(503, {}, close=True))
        self.assertTrue(client.disconnecting)
        self.assertEqual(h.frontend.dreq, 1)


class ClientAbortTests(SynchronousTestCase):
    def test_client_leaving_while_waiting_is_logged_ch(self) -> None:
        """A client that closes while its response is awaited is logged CH, and the server connection is cut."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(GET)
        _, server = h.accept()
        close(session, client, clean=False)
        self.assertTrue(server.aborted)
        self.assertEqual(h.server("s1").cur_sess, 0)
        self.assertEqual(h.frontend.cli_abrt, 1)
        self.assertEqual(h.access_lines()[-1], 'f b/s1 0/0/0/-1/0 -1 0 - - CH-- 1/1/1/1/0 0/0 "GET / HTTP/1.1"')

    def test_client_leaving_during_connect_cancels_it(self) -> None:
        """A client that closes while the server connection is being made frees the slot (CC)."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(GET)
        close(session, client)
        self.assertEqual(h.server("s1").cur_sess, 0)
        self.assertIn(" CC-- ", h.access_lines()[-1])

    def test_idle_client_close_is_not_logged(self) -> None:
        """A keep-alive client closing between requests produces no access line."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(GET)
        proto, _ = h.accept()
        proto.dataReceived(response())
        close(session, client)
        self.assertEqual(len(h.access_lines()), 1)
        self.assertEqual(h.frontend.cur_sess, 0)
        self.assertEqual(h.frontend.sessions, set())


class LingeringCloseTests(SynchronousTestCase):
    def test_error_close_half_closes_and_drains(self) -> None:
        """After a 400 lbd sends its FIN but keeps reading (and dropping) what the client still sends."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(b"GET / HTTP/1.1\r\nBad Header: 1\r\n\r\n")
        self.assertTrue(client.write_closed)
        self.assertFalse(client.disconnecting)
        self.assertEqual(client.producerState, "producing")
        session.dataReceived(b"more bytes the client had in flight")
        self.assertEqual(client.value(), render(400, {}, close=True))
        self.assertEqual(h.connects(), [])

    def test_client_fin_ends_the_linger(self) -> None:
        """When the client closes its side, the lingering connection closes."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(b"GET / HTTP/1.1\r\nBad Header: 1\r\n\r\n")
        session.readConnectionLost()
        self.assertTrue(client.disconnecting)

    def test_linger_is_bounded(self) -> None:
        """A client that never closes is closed LINGER seconds after the error."""
        from lbd.http.relay import LINGER

        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(b"GET / HTTP/1.1\r\nBad Header: 1\r\n\r\n")
        h.reactor.advance(LINGER - 0.001)
        self.assertFalse(client.disconnecting)
        h.reactor.advance(0.002)
        self.assertTrue(client.disconnecting)

    def test_plain_close_does_not_linger(self) -> None:
        """Connection: close after a fully read request closes at once."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        proto, _ = h.accept()
        proto.dataReceived(response())
        self.assertTrue(client.disconnecting)
        self.assertFalse(client.write_closed)
