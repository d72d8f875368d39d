"""Back-pressure, pipelining, Expect: 100-continue, Upgrade and CONNECT tunnels."""
from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from lbd.http.relay import PIPELINE_LIMIT
from tests.http.harness import GET, ONE_SERVER, Harness, close, response


class BackPressureTests(SynchronousTestCase):
    def test_session_produces_for_the_client_and_each_server_for_its_transport(self) -> None:
        """The session is the client transport's streaming producer; a server connection its own transport's."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(GET)
        proto, server = h.accept()
        self.assertIs(client.producer, session)
        self.assertTrue(client.streaming)
        self.assertIs(server.producer, proto)
        self.assertTrue(server.streaming)

    def test_paused_client_pauses_the_server_transport(self) -> None:
        """When the client's buffer fills, lbd stops reading the server; it resumes when the client drains."""
        h = Harness(servers=ONE_SERVER)
        session, _ = h.client()
        session.dataReceived(GET)
        proto, server = h.accept()
        proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        session.pauseProducing()
        self.assertEqual(server.producerState, "paused")
        session.resumeProducing()
        self.assertEqual(server.producerState, "producing")

    def test_full_server_buffer_pauses_the_client_transport(self) -> None:
        """When the server's buffer fills, lbd stops reading the client; it resumes when the server drains."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\nabc")
        proto, _ = h.accept()
        self.assertEqual(client.producerState, "producing")
        proto.pauseProducing()
        self.assertEqual(client.producerState, "paused")
        proto.resumeProducing()
        self.assertEqual(client.producerState, "producing")

    def test_client_paused_while_a_body_waits_for_a_connection(self) -> None:
        """A request body is not read while its server connection is being made."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
        self.assertEqual(client.producerState, "paused")
        h.accept()
        self.assertEqual(client.producerState, "producing")

    def test_pooled_connection_is_left_reading(self) -> None:
        """A connection paused for a slow client is resumed when it returns to the pool (to see the server close)."""
        h = Harness(servers=ONE_SERVER)
        session, _ = h.client()
        session.dataReceived(GET)
        proto, server = h.accept()
        proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabc")
        session.pauseProducing()
        proto.dataReceived(b"def")
        self.assertEqual(h.server("s1").idle, [proto])
        self.assertEqual(server.producerState, "producing")

    def test_next_request_inherits_a_blocked_client(self) -> None:
        """If the client is still not reading, the next request's server connection starts paused."""
        h = Harness(servers=ONE_SERVER)
        session, _ = h.client()
        session.dataReceived(GET)
        proto, server = h.accept()
        proto.dataReceived(response())
        session.pauseProducing()
        session.dataReceived(GET)
        self.assertEqual(server.producerState, "paused")


class PipeliningTests(SynchronousTestCase):
    def test_pipelined_requests_are_answered_in_order(self) -> None:
        """Requests sent together are forwarded one at a time and answered in order."""
        h = Harness(servers=ONE_SERVER, frontend="forwardfor = false")
        session, client = h.client()
        session.dataReceived(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
                             b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n")
        proto, server = h.accept()
        self.assertEqual(server.value(), b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
        proto.dataReceived(response(b"one"))
        self.assertEqual(server.value(), b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
        proto.dataReceived(response(b"two"))
        proto.dataReceived(response(b"three"))
        self.assertEqual(client.value(), response(b"one") + response(b"two") + response(b"three"))
        self.assertEqual(len(h.reactor.tcpClients), 1)

    def test_pipelined_errors_do_not_recurse(self) -> None:
        """Hundreds of pipelined requests answered by lbd itself (503) are handled in a loop, in order."""
        h = Harness(servers=ONE_SERVER, default_backend="")
        session, client = h.client()
        session.dataReceived(GET * 600)
        self.assertEqual(client.value().count(b"HTTP/1.1 503 Service Unavailable\r\n"), 600)
        self.assertFalse(client.disconnecting)

    def test_too_much_pipelined_data_pauses_the_client(self) -> None:
        """Beyond PIPELINE_LIMIT bytes queued behind a request, the client is no longer read."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(GET)
        proto, _ = h.accept()
        session.dataReceived(GET * (PIPELINE_LIMIT // len(GET) + 1))
        self.assertEqual(client.producerState, "paused")
        proto.dataReceived(response())
        self.assertEqual(client.producerState, "producing")

    def test_half_closed_client_gets_every_answer(self) -> None:
        """A client that sends requests and shuts its write side gets all the responses, then a close."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(GET + GET)
        session.readConnectionLost()
        proto, _ = h.accept()
        proto.dataReceived(response(b"1"))
        self.assertFalse(client.disconnecting)
        proto.dataReceived(response(b"2"))
        self.assertEqual(client.value(), response(b"1") + response(b"2"))
        self.assertTrue(client.disconnecting)


class ContinueTests(SynchronousTestCase):
    def test_100_continue_passes_and_the_body_follows(self) -> None:
        """Expect: 100-continue reaches the server, its 100 reaches the client, then the body and the answer."""
        h = Harness(servers=ONE_SERVER, frontend="forwardfor = false")
        session, client = h.client()
        session.dataReceived(b"PUT /f HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        proto, server = h.accept()
        self.assertEqual(server.value(),
                         b"PUT /f HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        proto.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.assertEqual(client.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        session.dataReceived(b"data")
        self.assertTrue(server.value().endswith(b"\r\n\r\ndata"))
        proto.dataReceived(response(b"", b"201 Created"))
        self.assertEqual(client.value(), b"HTTP/1.1 100 Continue\r\n\r\n" + response(b"", b"201 Created"))
        self.assertFalse(client.disconnecting)

    def test_final_answer_instead_of_100_closes_the_client(self) -> None:
        """A server refusing the body outright: the client gets the answer with Connection: close."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(b"PUT /f HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        proto, server = h.accept()
        proto.dataReceived(response(b"no", b"417 Expectation Failed"))
        self.assertEqual(client.value(), b"HTTP/1.1 417 Expectation Failed\r\nContent-Length: 2\r\n"
                                         b"Connection: close\r\n\r\nno")
        self.assertTrue(client.write_closed)
        self.assertTrue(server.disconnecting)

    def test_waiting_for_100_is_the_servers_time(self) -> None:
        """While the client waits for 100, timeout.server applies, not timeout.client."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(b"PUT /f HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        h.accept()
        h.reactor.advance(20.001)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 504 "))


class TunnelTests(SynchronousTestCase):
    WS = (b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
          b"Sec-WebSocket-Key: k\r\n\r\n")

    def test_websocket_upgrade_becomes_a_tunnel(self) -> None:
        """Upgrade is forwarded, the 101 comes back with Upgrade, then bytes pass both ways untouched."""
        h = Harness(servers=ONE_SERVER, frontend="forwardfor = false")
        session, client = h.client()
        session.dataReceived(self.WS)
        proto, server = h.accept()
        self.assertEqual(server.value(), b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
                                         b"Sec-WebSocket-Key: k\r\nConnection: upgrade\r\n\r\n")
        proto.dataReceived(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           b"Sec-WebSocket-Accept: a\r\n\r\n\x81\x02hi")
        self.assertEqual(client.value(), b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                         b"Sec-WebSocket-Accept: a\r\nConnection: upgrade\r\n\r\n\x81\x02hi")
        server.clear()
        session.dataReceived(b"\x81\x05hello GET / HTTP/1.1\r\n\r\n")
        self.assertEqual(server.value(), b"\x81\x05hello GET / HTTP/1.1\r\n\r\n")
        proto.dataReceived(b"\x88\x00")
        self.assertTrue(client.value().endswith(b"\x88\x00"))

    def test_bytes_sent_right_after_the_upgrade_request_reach_the_server(self) -> None:
        """Client bytes that followed the Upgrade request in the same read are passed on once the tunnel opens."""
        h = Harness(servers=ONE_SERVER)
        session, _ = h.client()
        session.dataReceived(self.WS + b"early")
        proto, server = h.accept()
        self.assertNotIn(b"early", server.value())
        proto.dataReceived(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
        self.assertTrue(server.value().endswith(b"\r\n\r\nearly"))

    def test_refused_upgrade_stays_http(self) -> None:
        """A server answering an Upgrade with 200 keeps the connection an ordinary keep-alive one."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(self.WS)
        proto, server = h.accept()
        proto.dataReceived(response(b"plain"))
        self.assertEqual(client.value(), response(b"plain"))
        server.clear()
        session.dataReceived(GET)
        self.assertTrue(server.value().startswith(b"GET / HTTP/1.1"))

    def test_tunnel_idle_timeout(self) -> None:
        """A tunnel with no traffic either way for timeout.tunnel is closed."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(self.WS)
        proto, server = h.accept()
        proto.dataReceived(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
        h.reactor.advance(40.0)
        proto.dataReceived(b"ping")
        h.reactor.advance(59.9)
        self.assertFalse(client.aborted)
        h.reactor.advance(0.2)
        self.assertTrue(client.aborted)
        self.assertTrue(server.aborted)

    def test_tunnel_close_by_server_closes_client_and_logs(self) -> None:
        """When the server ends the tunnel the client is closed and one access line says 101."""
        h = Harness(servers=ONE_SERVER)
        session, client = h.client()
        session.dataReceived(self.WS)
        proto, server = h.accept()
        proto.dataReceived(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\nxyz")
        close(proto, server)
        self.assertTrue(client.disconnecting)
        close(session, client)
        self.assertEqual(h.access_lines()[-1][:30], "f b/s1 0/0/0/0/0 101 80 - - --")
        self.assertEqual(h.server("s1").cur_sess, 0)

    def test_connect_becomes_a_tunnel(self) -> None:
        """CONNECT is forwarded; a 200 turns the connection into a tunnel."""
        h = Harness(servers=ONE_SERVER, frontend="forwardfor = false")
        session, client = h.client()
        session.dataReceived(b"CONNECT db.example:5432 HTTP/1.1\r\nHost: db.example:5432\r\n\r\n")
        proto, server = h.accept()
        self.assertEqual(server.value(), b"CONNECT db.example:5432 HTTP/1.1\r\nHost: db.example:5432\r\n\r\n")
        proto.dataReceived(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        server.clear()
        session.dataReceived(b"\x00\x01raw")
        self.assertEqual(server.value(), b"\x00\x01raw")


class PausedServerLostTests(SynchronousTestCase):
    def test_client_resumes_when_a_blocking_server_connection_dies(self) -> None:
        """A server connection that paused the client (e.g. during its TLS handshake) and then fails leaves the client readable."""
        h = Harness(retries=0)
        session, client = h.client()
        session.dataReceived(GET)
        proto, server = h.accept()
        proto.pauseProducing()
        self.assertEqual(client.producerState, "paused")
        close(proto, server, clean=False)
        self.assertEqual(client.producerState, "producing")
        self.assertTrue(client.value().startswith(b"HTTP/1.1 502 "))
