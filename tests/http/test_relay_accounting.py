"""Access-log lines, counters, histograms, graceful stop and operator aborts in http mode."""
from __future__ import annotations

import json
import re

from twisted.trial.unittest import SynchronousTestCase

from tests.http.harness import GET, ONE_SERVER, Harness, close, response


class AccessLogTests(SynchronousTestCase):
    def test_httplog_line(self) -> None:
        """One line per request with Tq/Tw/Tc/Tr/Ta, status, bytes, termination, counts and request line."""
        h = Harness(servers=ONE_SERVER)
        session, _ = h.client(peer=("192.0.2.9", 51000))
        # binary-exact durations, so the millisecond truncation is exact too
        h.reactor.advance(0.25)
        session.dataReceived(b"GET /p?q=1 HTTP/1.1\r\n")
        h.reactor.advance(0.015625)
        session.dataReceived(b"Host: a\r\n\r\n")
        h.reactor.advance(0.0078125)
        proto, _ = h.accept()
        h.reactor.advance(0.03125)
        proto.dataReceived(response(b"abc"))
        line = h.raw_access_lines()[0]
        self.assertRegex(line, r"^192\.0\.2\.9:51000 \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d\.\d{3}\] ")
        self.assertEqual(line.split("] ", 1)[1],
                         'f b/s1 265/0/7/31/54 200 41 - - ---- 1/1/1/1/0 0/0 "GET /p?q=1 HTTP/1.1"')

    def test_json_lines(self) -> None:
        """format = "json" writes the same fields as one object per line."""
        hj = Harness(servers=ONE_SERVER, log_format="json")
        session, _ = hj.client()
        session.dataReceived(GET)
        proto, _ = hj.accept()
        proto.dataReceived(response())
        with open(hj.access_path) as f:
            record = json.loads(f.readline())
        self.assertEqual((record["status"], record["backend"], record["server"], record["termination_state"],
                          record["request"], record["bytes_read"]),
                         (200, "b", "s1", "----", "GET / HTTP/1.1", 43))

    def test_no_line_when_access_log_is_off(self) -> None:
        """With access = "off" nothing is written and requests still work."""
        h = Harness(servers=ONE_SERVER, access=False)
        session, client = h.client()
        session.dataReceived(GET)
        proto, _ = h.accept()
        proto.dataReceived(response())
        self.assertEqual(client.value(), response())
        self.assertEqual(h.access_lines(), [])

    def test_keep_alive_requests_log_idle_time_in_tq(self) -> None:
        """The second request on a connection counts its keep-alive wait in Tq, not in Ta."""
        h = Harness(servers=ONE_SERVER)
        session, _ = h.client()
        session.dataReceived(GET)
        proto, _ = h.accept()
        proto.dataReceived(response())
        h.reactor.advance(2.0)
        session.dataReceived(GET)
        h.reactor.advance(0.0078125)
        proto.dataReceived(response())
        self.assertEqual(h.access_lines()[1], 'f b/s1 2000/0/0/7/7 200 43 - - ---- 1/1/1/1/0 0/0 "GET / HTTP/1.1"')


class CounterTests(SynchronousTestCase):
    def test_counters_after_two_requests(self) -> None:
        """Requests, statuses, bytes and histograms are counted on frontend, backend and server."""
        h = Harness(servers=ONE_SERVER, frontend="forwardfor = false")
        session, _ = h.client()
        session.dataReceived(GET)
        proto, _ = h.accept()
        proto.dataReceived(response(b"ok", b"404 Not Found"))
        session.dataReceived(GET)
        proto.dataReceived(response(b"ok"))
        fe, be, srv = h.frontend, h.backend, h.server("s1")
        self.assertEqual((fe.req_tot, be.req_tot, srv.req_tot, h.pool.cum_req), (2, 2, 2, 2))
        self.assertEqual(fe.hrsp, [0, 1, 0, 1, 0, 0])
        self.assertEqual(be.hrsp, [0, 1, 0, 1, 0, 0])
        self.assertEqual(srv.hrsp, [0, 1, 0, 1, 0, 0])
        self.assertEqual(fe.bytes_in, 2 * len(GET))
        self.assertEqual(srv.bytes_in, 2 * len(GET))
        self.assertEqual(fe.bytes_out, len(response(b"ok", b"404 Not Found")) + len(response(b"ok")))
        self.assertEqual(srv.bytes_out, fe.bytes_out)
        self.assertEqual((be.response_time.count, be.total_time.count, be.connect_time.count), (2, 2, 1))
        self.assertEqual((srv.tot_sess, srv.cur_sess, be.cur_sess), (2, 0, 0))
        self.assertEqual((fe.tot_sess, fe.cur_sess), (1, 1))

    def test_sessions_are_registered(self) -> None:
        """The session is in the frontend's sessions, and in its server's while a request is there."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        self.assertEqual(h.frontend.sessions, {session})
        session.dataReceived(GET)
        proto, _ = h.accept()
        self.assertEqual(h.server("s1").sessions, {session})
        proto.dataReceived(response())
        self.assertEqual(h.server("s1").sessions, set())
        close(session, client)
        self.assertEqual(h.frontend.sessions, set())


class StopTests(SynchronousTestCase):
    def test_graceful_close_of_an_idle_connection(self) -> None:
        """graceful_close closes a connection that is between requests."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.graceful_close()
        self.assertTrue(client.disconnecting)

    def test_graceful_close_lets_the_request_finish(self) -> None:
        """graceful_close during a request: the response completes with Connection: close, then the close."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(GET)
        proto, _ = h.accept()
        session.graceful_close()
        self.assertFalse(client.disconnecting)
        proto.dataReceived(response())
        self.assertEqual(client.value(), b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
        self.assertTrue(client.disconnecting)

    def test_abort_cuts_both_sides(self) -> None:
        """abort (shutdown sessions, end of grace) cuts the client and its server connection."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(GET)
        _, server = h.accept()
        session.abort()
        self.assertTrue(client.aborted)
        close(session, client, clean=False)
        self.assertTrue(server.aborted)
        self.assertEqual(h.server("s1").cur_sess, 0)
        self.assertTrue(re.search(r" KR-- ", h.access_lines()[-1]), h.access_lines())
        self.assertEqual(h.frontend.cli_abrt, 0)
