"""Server connections: pooling, safe reuse, retries on a stale connection, failover."""
from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.http.harness import GET, ONE_SERVER, Harness, close, response


class PoolTests(SynchronousTestCase):
    def test_connection_is_reused_for_the_next_request(self) -> None:
        """After a complete keep-alive response, the next request goes on the same server connection."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(GET)
        proto, server = h.accept()
        proto.dataReceived(response(b"one"))
        server.clear()
        session.dataReceived(GET)
        self.assertEqual(len(h.reactor.tcpClients), 1)
        self.assertTrue(server.value().startswith(b"GET / HTTP/1.1\r\n"))
        proto.dataReceived(response(b"two"))
        self.assertTrue(client.value().endswith(b"two"))

    def test_connection_is_shared_across_clients(self) -> None:
        """A pooled connection serves a request from another client connection."""
        h = Harness(servers=ONE_SERVER)
        first, _ = h.client()
        first.dataReceived(GET)
        proto, server = h.accept()
        proto.dataReceived(response())
        server.clear()
        second, client2 = h.client(peer=("10.0.0.2", 40001))
        second.dataReceived(GET)
        self.assertEqual(len(h.reactor.tcpClients), 1)
        self.assertIn(b"X-Forwarded-For: 10.0.0.2\r\n", server.value())
        proto.dataReceived(response(b"for two"))
        self.assertTrue(client2.value().endswith(b"for two"))

    def test_idle_connection_holds_no_session_slot(self) -> None:
        """A pooled idle connection does not count as a current session of its server."""
        h = Harness(servers=ONE_SERVER)
        session, _ = h.client()
        session.dataReceived(GET)
        proto, _ = h.accept()
        self.assertEqual(h.server("s1").cur_sess, 1)
        proto.dataReceived(response())
        self.assertEqual(h.server("s1").cur_sess, 0)
        self.assertEqual(h.server("s1").idle, [proto])

    def test_server_connection_close_is_not_pooled(self) -> None:
        """A response with Connection: close leaves nothing in the pool and the connection is closed."""
        h = Harness(servers=ONE_SERVER)
        session, _ = h.client()
        session.dataReceived(GET)
        proto, server = h.accept()
        proto.dataReceived(response(headers=b"Connection: close\r\n"))
        self.assertEqual(h.server("s1").idle, [])
        self.assertTrue(server.disconnecting)

    def test_idle_connection_closed_by_the_server_is_dropped(self) -> None:
        """When the server closes a pooled connection, it leaves the pool."""
        h = Harness(servers=ONE_SERVER)
        session, _ = h.client()
        session.dataReceived(GET)
        proto, server = h.accept()
        proto.dataReceived(response())
        close(proto, server)
        self.assertEqual(h.server("s1").idle, [])

    def test_idle_connection_expires_after_keep_alive_timeout(self) -> None:
        """A pooled connection idle for the backend's timeout.keep_alive is closed and dropped."""
        h = Harness(servers=ONE_SERVER, backend='timeout.keep_alive = "7s"')
        session, _ = h.client()
        session.dataReceived(GET)
        proto, server = h.accept()
        proto.dataReceived(response())
        h.reactor.advance(6.9)
        self.assertEqual(h.server("s1").idle, [proto])
        self.assertFalse(server.disconnecting)
        h.reactor.advance(0.2)
        self.assertEqual(h.server("s1").idle, [])
        self.assertTrue(server.disconnecting)

    def test_unsolicited_bytes_on_an_idle_connection_drop_it(self) -> None:
        """A server that writes on an idle pooled connection loses it (it could be taken for the next answer)."""
        h = Harness(servers=ONE_SERVER)
        session, _ = h.client()
        session.dataReceived(GET)
        proto, server = h.accept()
        proto.dataReceived(response())
        proto.dataReceived(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
        self.assertTrue(server.aborted)
        close(proto, server, clean=False)
        self.assertEqual(h.server("s1").idle, [])

    def test_body_request_never_uses_a_pooled_connection(self) -> None:
        """A request with a body, which cannot be replayed, gets a fresh connection."""
        h = Harness(servers=ONE_SERVER)
        session, _ = h.client()
        session.dataReceived(GET)
        proto, _ = h.accept()
        proto.dataReceived(response())
        session.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx")
        self.assertEqual(len(h.reactor.tcpClients), 2)
        self.assertEqual(h.server("s1").idle, [proto])

    def test_send_proxy_header_once_and_never_pooled(self) -> None:
        """With send_proxy the PROXY header precedes the request and the connection is not reused."""
        h = Harness(servers='s1 = { address = "127.0.0.1:9001", send_proxy = "v1" }',
                    frontend="forwardfor = false")
        session, _ = h.client()
        session.dataReceived(GET)
        proto, server = h.accept()
        self.assertEqual(server.value(), b"PROXY TCP4 10.0.0.1 127.0.0.1 40000 8080\r\n" + GET)
        proto.dataReceived(response())
        self.assertEqual(h.server("s1").idle, [])
        self.assertTrue(server.disconnecting)

    def test_balancing_is_per_request(self) -> None:
        """Requests on one keep-alive client connection alternate between servers (round robin)."""
        h = Harness()
        session, client = h.client()
        session.dataReceived(GET)
        p1, _ = h.accept()
        p1.dataReceived(response(b"1"))
        session.dataReceived(GET)
        p2, _ = h.accept()
        p2.dataReceived(response(b"2"))
        session.dataReceived(GET)
        p1.dataReceived(response(b"1"))
        self.assertEqual(h.connects(), [("127.0.0.1", 9001), ("127.0.0.1", 9002)])
        self.assertEqual(client.value().count(b"\r\n\r\n1"), 2)


class RetryTests(SynchronousTestCase):
    def _stale(self, h: Harness) -> tuple[object, object]:
        """One request completes, leaving a pooled connection; returns (proto, transport)."""
        session, client = h.client()
        session.dataReceived(GET)
        proto, server = h.accept()
        proto.dataReceived(response(b"first"))
        client.clear()
        return session, client, proto, server  # type: ignore[return-value]

    def test_stale_pooled_connection_retries_transparently(self) -> None:
        """A GET on a pooled connection the server closed before answering is re-sent on a fresh one."""
        h = Harness(servers=ONE_SERVER)
        session, client, proto, server = self._stale(h)  # type: ignore[misc]
        server.clear()
        session.dataReceived(GET)
        self.assertTrue(server.value().startswith(b"GET / "))
        close(proto, server)
        self.assertEqual(len(h.reactor.tcpClients), 2)
        proto2, server2 = h.accept()
        self.assertTrue(server2.value().startswith(b"GET / HTTP/1.1\r\n"))
        proto2.dataReceived(response(b"second"))
        self.assertEqual(client.value(), response(b"second"))
        self.assertEqual(h.backend.wretr, 1)
        self.assertEqual(h.access_lines()[-1], 'f b/s1 0/0/0/0/0 200 44 - - ---- 1/1/1/1/1 0/0 "GET / HTTP/1.1"')

    def test_retry_prefers_another_server(self) -> None:
        """A GET whose fresh connection died before answering is retried on the other server."""
        h = Harness()
        session, client = h.client()
        session.dataReceived(GET)
        proto, server = h.accept()
        close(proto, server, clean=False)
        self.assertEqual(h.connects(), [("127.0.0.1", 9001), ("127.0.0.1", 9002)])
        proto2, _ = h.accept()
        proto2.dataReceived(response(b"from s2"))
        self.assertEqual(client.value(), response(b"from s2"))
        self.assertEqual((h.server("s1").wretr, h.server("s1").wredis, h.backend.wredis), (1, 1, 1))

    def test_post_is_never_retried(self) -> None:
        """A POST whose connection closes before any response byte gets 502, and is not re-sent."""
        h = Harness()
        session, client = h.client()
        session.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx")
        proto, server = h.accept()
        close(proto, server)
        self.assertEqual(len(h.reactor.tcpClients), 1)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 502 Bad Gateway\r\n"))
        self.assertEqual(h.access_lines()[-1][:42], "f b/s1 0/0/0/-1/0 502 206 - - SH-- 1/1/1/1")

    def test_no_retry_after_response_bytes(self) -> None:
        """Once part of a response head arrived, a closed connection is a 502, not a retry."""
        h = Harness()
        session, client = h.client()
        session.dataReceived(GET)
        proto, server = h.accept()
        proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-")
        close(proto, server)
        self.assertEqual(len(h.reactor.tcpClients), 1)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 502 Bad Gateway\r\n"))

    def test_retries_are_bounded(self) -> None:
        """After ``retries`` re-sends that all die, the client gets 502."""
        h = Harness(retries=2)
        session, client = h.client()
        session.dataReceived(GET)
        for _ in range(3):
            proto, server = h.accept()
            close(proto, server)
        self.assertEqual(len(h.reactor.tcpClients), 3)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 502 Bad Gateway\r\n"))

    def test_server_dying_mid_body_truncates_the_client(self) -> None:
        """A server that closes in the middle of a body closes the client, who sees the truncation."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(GET)
        proto, server = h.accept()
        proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        close(proto, server)
        self.assertEqual(client.value(), b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        self.assertTrue(client.disconnecting)
        self.assertFalse(client.aborted)
        self.assertEqual(h.server("s1").srv_abrt, 1)
        self.assertEqual(h.access_lines()[-1][-35:], 'SD-- 1/1/1/1/0 0/0 "GET / HTTP/1.1"')
