"""What reaches the server and the client: heads, hop-by-hop headers, X-Forwarded-*, writes."""
from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.http.harness import GET, ONE_SERVER, Harness, close, response


class RequestHeadTests(SynchronousTestCase):
    def test_head_passes_with_case_and_order_and_forwarded_headers_appended(self) -> None:
        """Header names, case and order are unchanged; X-Forwarded-For/-Proto/-Host come last."""
        h = Harness(servers=ONE_SERVER)
        session, _ = h.client()
        session.dataReceived(b"GET /a?b=1 HTTP/1.1\r\nhOsT: Example.com\r\nX-ONE: 1\r\naccept: */*\r\nX-two:  2 \r\n\r\n")
        _, server = h.accept()
        self.assertEqual(
            server.value(),
            b"GET /a?b=1 HTTP/1.1\r\nhOsT: Example.com\r\nX-ONE: 1\r\naccept: */*\r\nX-two: 2\r\n"
            b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: Example.com\r\n\r\n")

    def test_hop_by_hop_headers_are_removed(self) -> None:
        """Connection, the headers it names, Keep-Alive, Proxy-Connection, TE, Trailer and Upgrade do not reach the server."""
        h = Harness(servers=ONE_SERVER)
        session, _ = h.client()
        session.dataReceived(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\n"
            b"Proxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\n"
            b"X-Secret: s\r\nX-Kept: k\r\n\r\n")
        _, server = h.accept()
        self.assertEqual(server.value(),
                         b"GET / HTTP/1.1\r\nHost: a\r\nX-Kept: k\r\nX-Forwarded-For: 10.0.0.1\r\n"
                         b"X-Forwarded-Proto: http\r\nX-Forwarded-Host: a\r\n\r\n")

    def test_connection_cannot_remove_framing_headers(self) -> None:
        """A Connection header naming Content-Length or Host does not strip them (framing stays intact)."""
        h = Harness(servers=ONE_SERVER)
        session, _ = h.client()
        session.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nConnection: content-length, host\r\n"
                             b"Content-Length: 2\r\n\r\nhi")
        _, server = h.accept()
        self.assertEqual(server.value(),
                         b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nX-Forwarded-For: 10.0.0.1\r\n"
                         b"X-Forwarded-Proto: http\r\nX-Forwarded-Host: a\r\n\r\nhi")

    def test_client_forwarded_for_is_kept_and_ours_appended(self) -> None:
        """An incoming X-Forwarded-For stays; lbd adds its own line after it."""
        h = Harness(servers=ONE_SERVER)
        session, _ = h.client()
        session.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 192.0.2.7\r\n\r\n")
        _, server = h.accept()
        self.assertIn(b"X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-For: 10.0.0.1\r\n", server.value())

    def test_client_forwarded_proto_and_host_are_replaced(self) -> None:
        """X-Forwarded-Proto and X-Forwarded-Host sent by a client cannot spoof lbd's values."""
        h = Harness(servers=ONE_SERVER)
        session, _ = h.client()
        session.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\n"
                             b"X-Forwarded-Host: evil\r\n\r\n")
        _, server = h.accept()
        value = server.value()
        self.assertNotIn(b"https", value)
        self.assertNotIn(b"evil", value)
        self.assertIn(b"X-Forwarded-Proto: http\r\nX-Forwarded-Host: a\r\n", value)

    def test_forwardfor_off_adds_nothing(self) -> None:
        """With forwardfor = false the request head passes without X-Forwarded-* additions."""
        h = Harness(servers=ONE_SERVER, frontend="forwardfor = false")
        session, _ = h.client()
        session.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\n\r\n")
        _, server = h.accept()
        self.assertEqual(server.value(), b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\n\r\n")

    def test_http10_request_stays_http10_and_asks_for_keep_alive(self) -> None:
        """An HTTP/1.0 request goes out as HTTP/1.0 with Connection: keep-alive, so the server connection can be pooled."""
        h = Harness(servers=ONE_SERVER, frontend="forwardfor = false")
        session, _ = h.client()
        session.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
        _, server = h.accept()
        self.assertEqual(server.value(), b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")

    def test_head_and_body_reach_the_server_in_one_write(self) -> None:
        """A request head and the body bytes that came with it are written to the server at once."""
        h = Harness(servers=ONE_SERVER, frontend="forwardfor = false")
        session, _ = h.client()
        session.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
        _, server = h.accept()
        self.assertEqual(server.writes, [b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"])

    def test_request_body_streams_as_it_arrives(self) -> None:
        """Body bytes arriving after the head are forwarded at once, chunk framing included."""
        h = Harness(servers=ONE_SERVER, frontend="forwardfor = false")
        session, _ = h.client()
        session.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        _, server = h.accept()
        server.clear()
        session.dataReceived(b"5\r\nhello\r\n")
        self.assertEqual(server.value(), b"5\r\nhello\r\n")
        session.dataReceived(b"0\r\n\r\n")
        self.assertEqual(server.value(), b"5\r\nhello\r\n0\r\n\r\n")


class ResponseHeadTests(SynchronousTestCase):
    def test_response_passes_unchanged_in_one_write(self) -> None:
        """Status, header case and order and body reach the client in one write."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(GET)
        proto, _ = h.accept()
        proto.dataReceived(b"HTTP/1.1 201 Created\r\nx-b: 2\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(client.writes, [b"HTTP/1.1 201 Created\r\nx-b: 2\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nok"])

    def test_response_hop_by_hop_headers_are_removed(self) -> None:
        """Connection, the headers it names and Keep-Alive from the server do not reach the client."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(GET)
        proto, _ = h.accept()
        proto.dataReceived(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Internal\r\nKeep-Alive: timeout=5\r\n"
                           b"X-Internal: 1\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(client.value(), b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    def test_http10_keep_alive_client_is_told_keep_alive(self) -> None:
        """An HTTP/1.0 client that asked for keep-alive gets Connection: keep-alive and stays connected."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        proto, _ = h.accept()
        proto.dataReceived(response(b"x"))
        self.assertEqual(client.value(), b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\nx")
        self.assertFalse(client.disconnecting)

    def test_http10_client_without_keep_alive_is_closed(self) -> None:
        """A plain HTTP/1.0 client gets Connection: close and the connection closes after the response."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
        proto, _ = h.accept()
        proto.dataReceived(response(b"x"))
        self.assertEqual(client.value(), b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx")
        self.assertTrue(client.disconnecting)

    def test_client_connection_close_is_honoured(self) -> None:
        """Connection: close from a client gets Connection: close back, then the close."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        proto, _ = h.accept()
        proto.dataReceived(response(b"x"))
        self.assertEqual(client.value(), b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx")
        self.assertTrue(client.disconnecting)

    def test_body_until_close_closes_the_client(self) -> None:
        """A response delimited by the server's close is passed on with Connection: close, then the client is closed."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(GET)
        proto, server = h.accept()
        proto.dataReceived(b"HTTP/1.0 200 OK\r\n\r\npart1 ")
        self.assertEqual(client.value(), b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npart1 ")
        self.assertFalse(client.disconnecting)
        proto.dataReceived(b"part2")
        close(proto, server)
        self.assertTrue(client.value().endswith(b"part1 part2"))
        self.assertTrue(client.disconnecting)
        self.assertEqual(h.server("s1").idle, [])

    def test_head_response_framing(self) -> None:
        """A response to HEAD ends after its head even with a Content-Length; the next request proceeds."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
        proto, server = h.accept()
        proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        self.assertEqual(client.value(), b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        server.clear()
        session.dataReceived(GET)
        self.assertTrue(server.value().startswith(b"GET / HTTP/1.1\r\n"))

    def test_204_and_304_have_no_body(self) -> None:
        """204 and 304 end after the head; the pooled connection serves the next request."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        proto = None
        for status in (b"204 No Content", b"304 Not Modified"):
            client.clear()
            session.dataReceived(GET)
            if proto is None:
                proto, _ = h.accept()
            proto.dataReceived(b"HTTP/1.1 %s\r\nContent-Length: 7\r\n\r\n" % status)
            self.assertEqual(client.value(), b"HTTP/1.1 %s\r\nContent-Length: 7\r\n\r\n" % status)
        self.assertEqual(len(h.reactor.tcpClients), 1)

    def test_chunked_response_passes_verbatim(self) -> None:
        """A chunked response body reaches the client with its chunk framing and trailers."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(GET)
        proto, _ = h.accept()
        proto.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n")
        proto.dataReceived(b"0\r\nX-Trailer: t\r\n\r\n")
        self.assertEqual(client.value(), b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                         b"3;x=1\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n")
        self.assertEqual(len(h.server("s1").idle), 1)
