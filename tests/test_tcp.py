"""TCP mode with an in-memory reactor: connects, retries, timeouts, queue, back-pressure, half-close."""
from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from lbd import config
from lbd.accesslog import AccessLog
from lbd.pool import Pool
from lbd.tcp import ProxyContext, TCPSession, proxy_header
from lbd.testing import FakeTCPTransport

CONFIG = """\
[log]
access = "off"
[defaults]
mode = "tcp"
retries = {retries}
redispatch = {redispatch}
[defaults.timeout]
connect = "2s"
client = "30s"
server = "20s"
queue = "3s"
[frontends.f]
bind = "127.0.0.1:8080"
default_backend = "b"
maxconn = {fe_maxconn}
[backends.b.servers]
s1 = {{ address = "127.0.0.1:9001"{s1} }}
s2 = {{ address = "127.0.0.1:9002"{s2} }}
"""


class Harness:
    """A frontend context on a MemoryReactorClock; sessions with fake transports."""

    def __init__(self, retries: int = 3, redispatch: bool = True, fe_maxconn: int = 100,
                 s1: str = "", s2: str = "", global_maxconn: int = 100) -> None:
        cfg = config.loads(CONFIG.format(retries=retries, redispatch=str(redispatch).lower(),
                                         fe_maxconn=fe_maxconn, s1=s1, s2=s2))
        self.reactor = MemoryReactorClock()
        self.pool = Pool(self.reactor, global_maxconn)
        self.backend = self.pool.add_backend(cfg.backends["b"])
        fe = self.pool.add_frontend(cfg.frontends["f"])
        self.ctx = ProxyContext(self.reactor, self.pool, fe, AccessLog(cfg.log))

    def client(self, peer: tuple[str, int] = ("10.0.0.1", 40000)) -> tuple[TCPSession, FakeTCPTransport]:
        session = TCPSession(self.ctx)
        transport = FakeTCPTransport(peer=peer)
        session.makeConnection(transport)
        return session, transport

    def connects(self) -> list[tuple[str, int]]:
        return [(c[0], c[1]) for c in self.reactor.tcpClients]

    def accept(self, index: int = -1) -> tuple[Any, FakeTCPTransport]:
        """The server answers connect attempt ``index``."""
        host, port, factory = self.reactor.tcpClients[index][:3]
        proto = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = FakeTCPTransport(peer=(host, port), host=("127.0.0.1", 50000))
        proto.makeConnection(transport)
        return proto, transport

    def refuse(self, index: int = -1) -> None:
        factory = self.reactor.tcpClients[index][2]
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))


class ConnectTests(SynchronousTestCase):
    def test_client_paused_until_server_connects(self) -> None:
        """The client is not read from until its server leg exists."""
        h = Harness()
        _, client = h.client()
        self.assertEqual(client.producerState, "paused")
        h.accept()
        self.assertEqual(client.producerState, "producing")

    def test_bytes_relay_both_ways(self) -> None:
        """Client bytes reach the server and server bytes reach the client, unchanged."""
        h = Harness()
        session, client = h.client()
        session.dataReceived(b"early bytes ")
        proto, server = h.accept()
        session.dataReceived(b"more")
        self.assertEqual(server.value(), b"early bytes more")
        proto.dataReceived(b"reply")
        self.assertEqual(client.value(), b"reply")

    def test_each_transport_produces_for_the_other(self) -> None:
        """Back-pressure: each side is registered as the other's streaming producer."""
        h = Harness()
        _, client = h.client()
        _, server = h.accept()
        self.assertIs(client.producer, server)
        self.assertTrue(client.streaming)
        self.assertIs(server.producer, client)
        self.assertTrue(server.streaming)

    def test_nodelay_on_both_sides(self) -> None:
        """TCP_NODELAY is set on the client and the server connection."""
        h = Harness()
        _, client = h.client()
        _, server = h.accept()
        self.assertTrue(client.nodelay)
        self.assertTrue(server.nodelay)

    def test_connect_uses_the_picked_servers_in_turn(self) -> None:
        """Successive clients go to s1 then s2 (round robin)."""
        h = Harness()
        h.client()
        h.client()
        self.assertEqual(h.connects(), [("127.0.0.1", 9001), ("127.0.0.1", 9002)])


class RetryTests(SynchronousTestCase):
    def test_refused_connect_is_retried_on_another_server(self) -> None:
        """A refused connect goes to the next server with redispatch."""
        h = Harness()
        h.client()
        h.refuse()
        self.assertEqual(h.connects(), [("127.0.0.1", 9001), ("127.0.0.1", 9002)])
        s1 = h.backend.servers["s1"]
        self.assertEqual((s1.econ, s1.wretr, s1.wredis, s1.cur_sess), (1, 1, 1, 0))

    def test_connect_timeout_then_retry_on_another_server(self) -> None:
        """A connect that does not finish within timeout.connect is abandoned and retried elsewhere."""
        h = Harness()
        h.client()
        h.reactor.advance(1.999)
        self.assertEqual(len(h.connects()), 1)
        h.reactor.advance(0.001)
        self.assertEqual(h.connects(), [("127.0.0.1", 9001), ("127.0.0.1", 9002)])
        self.assertEqual(h.backend.econ, 1)

    def test_without_redispatch_retries_stay_on_the_server(self) -> None:
        """redispatch = false retries the same server."""
        h = Harness(redispatch=False)
        h.client()
        h.refuse()
        self.assertEqual(h.connects(), [("127.0.0.1", 9001), ("127.0.0.1", 9001)])

    def test_retries_exhausted_closes_the_client(self) -> None:
        """After 1 + retries failed connects the client connection is closed."""
        h = Harness(retries=2)
        session, client = h.client()
        for _ in range(3):
            h.refuse()
        self.assertEqual(len(h.connects()), 3)
        self.assertTrue(client.disconnecting)
        self.assertEqual(session.termination, "SC")
        self.assertEqual(h.backend.econ, 3)

    def test_late_success_after_timeout_is_dropped(self) -> None:
        """A connect that completes after its timeout is closed, not used."""
        h = Harness()
        h.client()
        h.reactor.advance(2)
        _, late = h.accept(0)
        self.assertTrue(late.disconnecting)


class TimeoutTests(SynchronousTestCase):
    def test_client_inactivity(self) -> None:
        """With no traffic for timeout.client the session is cut, not before."""
        h = Harness()
        session, client = h.client()
        _, server = h.accept()
        h.reactor.advance(19.9)
        session.dataReceived(b"x")           # activity resets the client and server timers
        h.reactor.advance(19.9)
        self.assertFalse(client.aborted)
        h.reactor.advance(0.2)
        self.assertTrue(server.aborted)
        self.assertEqual(session.termination, "sD")

    def test_server_inactivity_shorter_fires_first(self) -> None:
        """An idle session ends at timeout.server (20s) before timeout.client (30s)."""
        h = Harness()
        session, client = h.client()
        _, server = h.accept()
        h.reactor.advance(19.999)
        self.assertFalse(client.aborted)
        h.reactor.advance(0.001)
        self.assertTrue(client.aborted and server.aborted)
        self.assertEqual(session.termination, "sD")

    def test_queue_timeout(self) -> None:
        """With every server at maxconn a client waits timeout.queue, then is closed."""
        h = Harness(s1=", maxconn = 1", s2=", maxconn = 1")
        h.client()
        h.client()
        h.accept(0)
        h.accept(1)
        session, client = h.client()
        self.assertEqual(len(h.connects()), 2)
        self.assertEqual(len(h.backend.queue), 1)
        h.reactor.advance(2.999)
        self.assertFalse(client.disconnecting)
        h.reactor.advance(0.001)
        self.assertTrue(client.disconnecting)
        self.assertEqual(session.termination, "sQ")
        self.assertEqual(len(h.backend.queue), 0)

    def test_queued_client_gets_a_freed_slot(self) -> None:
        """When a server connection ends, the first queued client takes its slot."""
        h = Harness(s1=", maxconn = 1", s2=", maxconn = 1")
        first, first_t = h.client()
        h.client()
        h.client()
        proto, server = h.accept(0)
        proto.connectionLost(Failure(ConnectionRefusedError()))
        first.connectionLost(Failure(ConnectionRefusedError()))
        self.assertEqual(h.connects()[-1], ("127.0.0.1", 9001))
        self.assertEqual(len(h.backend.queue), 0)


class CloseTests(SynchronousTestCase):
    def test_client_half_close_is_passed_on(self) -> None:
        """A client FIN becomes a FIN towards the server; the reply still flows."""
        h = Harness()
        session, client = h.client()
        proto, server = h.accept()
        session.readConnectionLost()
        self.assertTrue(server.write_closed)
        self.assertFalse(client.disconnecting)
        proto.dataReceived(b"answer")
        self.assertEqual(client.value(), b"answer")

    def test_server_half_close_is_passed_on(self) -> None:
        """A server FIN becomes a FIN towards the client; then both closed ends close both."""
        h = Harness()
        session, client = h.client()
        proto, server = h.accept()
        proto.readConnectionLost()
        self.assertTrue(client.write_closed)
        session.readConnectionLost()
        self.assertTrue(client.disconnecting and server.disconnecting)

    def test_half_close_before_server_connects(self) -> None:
        """A FIN from the client before the server leg exists is sent after the pending bytes."""
        h = Harness()
        session, _ = h.client()
        session.dataReceived(b"req")
        session.readConnectionLost()
        _, server = h.accept()
        self.assertEqual(server.value(), b"req")
        self.assertTrue(server.write_closed)

    def test_accounting_after_close(self) -> None:
        """Closing both legs frees the server slot and adds the bytes to the counters."""
        h = Harness()
        session, client = h.client()
        proto, server = h.accept()
        session.dataReceived(b"12345")
        proto.dataReceived(b"abc")
        proto.connectionLost(Failure(ConnectionRefusedError()))
        session.connectionLost(Failure(ConnectionRefusedError()))
        srv = h.backend.servers["s1"]
        self.assertEqual((srv.cur_sess, srv.tot_sess, srv.bytes_in, srv.bytes_out), (0, 1, 5, 3))
        self.assertEqual((h.pool.cur_conns, h.ctx.frontend.cur_sess), (0, 0))
        self.assertEqual(h.ctx.frontend.sessions, set())

    def test_frontend_maxconn_rejects(self) -> None:
        """Beyond the frontend's maxconn a connection is closed at once."""
        h = Harness(fe_maxconn=1)
        h.client()
        _, second = h.client()
        self.assertTrue(second.aborted)
        self.assertEqual(h.ctx.frontend.dreq, 1)
        self.assertEqual(len(h.connects()), 1)


class ProxyHeaderTests(SynchronousTestCase):
    def test_send_proxy_v1_is_written_first(self) -> None:
        """send_proxy = "v1" writes the PROXY line before any client byte."""
        h = Harness(s1=', send_proxy = "v1"')
        session, _ = h.client(peer=("10.1.2.3", 5555))
        session.dataReceived(b"hello")
        _, server = h.accept()
        self.assertEqual(server.value(), b"PROXY TCP4 10.1.2.3 127.0.0.1 5555 8080\r\nhello")

    def test_proxy_v2_header(self) -> None:
        """PROXY v2 for IPv4 is the signature, PROXY|TCP4, length 12, addresses and ports."""
        header = proxy_header("v2", IPv4Address("TCP", "10.1.2.3", 5555), IPv4Address("TCP", "127.0.0.1", 8080))
        self.assertEqual(header, b"\r\n\r\n\x00\r\nQUIT\n" + b"\x21\x11\x00\x0c"
                         + bytes([10, 1, 2, 3, 127, 0, 0, 1]) + b"\x15\xb3\x1f\x90")
