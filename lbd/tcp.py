"""TCP mode: bytes relayed both ways, with back-pressure and half-close.

The client connection is paused until the server leg connects; then each
transport is the other's streaming producer, so a slow reader on one side
pauses reading on the other and lbd never buffers a whole stream.
"""
from __future__ import annotations

import socket
import struct
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from lbd.logsetup import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from lbd import fastpath
from lbd.connect import NO_SERVER, QUEUE_TIMEOUT, ServerConnect

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall

    from lbd.accesslog import AccessLog
    from lbd.pool import Backend, Frontend, Pool, Server


def proxy_header(version: str, client: Any, local: Any) -> bytes:
    """A PROXY protocol v1 or v2 header for a client seen at ``client`` on ``local``."""
    v6 = ":" in getattr(client, "host", "")
    if version == "v1":
        if not hasattr(client, "host"):
            return b"PROXY UNKNOWN\r\n"
        fam = "TCP6" if v6 else "TCP4"
        return ("PROXY %s %s %s %d %d\r\n" % (fam, client.host, local.host, client.port, local.port)).encode()
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    if not hasattr(client, "host"):
        return sig + b"\x20\x00\x00\x00"     # LOCAL command, no address
    if v6:
        addrs = (socket.inet_pton(socket.AF_INET6, client.host)
                 + socket.inet_pton(socket.AF_INET6, local.host)
                 + struct.pack("!HH", client.port, local.port))
        return sig + b"\x21\x21" + struct.pack("!H", len(addrs)) + addrs
    addrs = (socket.inet_aton(client.host) + socket.inet_aton(local.host)
             + struct.pack("!HH", client.port, local.port))
    return sig + b"\x21\x11" + struct.pack("!H", len(addrs)) + addrs


class ProxyContext:
    """What every session of one frontend needs; one per frontend, long-lived."""

    __slots__ = ("reactor", "pool", "frontend", "backend", "access")

    def __init__(self, reactor: Any, pool: Pool, frontend: Frontend, access: AccessLog) -> None:
        self.reactor = reactor
        self.pool = pool
        self.frontend = frontend
        self.access = access
        self.backend: Backend | None = pool.backends.get(frontend.cfg.default_backend or "")

    def admit(self) -> bool:
        """Count a new client connection; False when a maxconn says no."""
        pool = self.pool
        fe = self.frontend
        if pool.cur_conns >= pool.maxconn or fe.cur_sess >= fe.maxconn:
            fe.dreq += 1
            return False
        pool.cur_conns += 1
        pool.cum_conns += 1
        if pool.cur_conns > pool.max_conns:
            pool.max_conns = pool.cur_conns
        fe.cur_sess += 1
        fe.tot_sess += 1
        if fe.cur_sess > fe.max_sess:
            fe.max_sess = fe.cur_sess
        return True

    def leave(self) -> None:
        self.pool.cur_conns -= 1
        self.frontend.cur_sess -= 1


@implementer(IHalfCloseableProtocol)
class ServerSide(Protocol):
    """The server leg of a TCP session."""

    session: TCPSession | None = None

    def connectionMade(self) -> None:
        fastpath.adopt(self.transport)
        self.factory.connected(self)  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        s = self.session
        if s is not None:
            s.from_server(data)

    def readConnectionLost(self) -> None:
        if self.session is not None:
            self.session.server_eof()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        s = self.session
        self.session = None
        if s is not None:
            s.server_lost(reason)


@implementer(IHalfCloseableProtocol)
class TCPSession(Protocol):
    """One client connection in tcp mode, and its server leg."""

    log = Logger()

    def __init__(self, ctx: ProxyContext) -> None:
        self.ctx = ctx
        self.server: Server | None = None
        self.server_proto: ServerSide | None = None
        self.connect: ServerConnect | None = None
        self.admitted = False
        self.closed = False
        self.client_eof = False
        self.server_eof_seen = False
        self.pending: list[bytes] = []
        self.bytes_in = 0        # client -> server
        self.bytes_out = 0       # server -> client
        self.start = 0.0
        self.termination = "--"
        self.client_timer: IDelayedCall | None = None
        self.server_timer: IDelayedCall | None = None

    # -- client side ---------------------------------------------------

    def connectionMade(self) -> None:
        ctx = self.ctx
        reactor = ctx.reactor
        self.start = reactor.seconds()
        transport = self.transport
        if not ctx.admit():
            transport.abortConnection()  # type: ignore[union-attr]
            return
        self.admitted = True
        ctx.frontend.sessions.add(self)
        try:
            transport.setTcpNoDelay(True)  # type: ignore[union-attr]
        except Exception:
            pass
        fastpath.adopt(transport)
        transport.pauseProducing()  # type: ignore[union-attr]
        be = ctx.backend
        if be is None:
            self.termination = "PC"
            self._close_client()
            return
        timeouts = ctx.frontend.cfg.timeouts
        self.client_timer = reactor.callLater(timeouts.client, self._client_timeout)
        peer = transport.getPeer()  # type: ignore[union-attr]
        key = getattr(peer, "host", "").encode()
        self.connect = ServerConnect(reactor, be, key, ServerSide, self)
        self.connect.start()

    def dataReceived(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self.client_timer is not None:
            self.client_timer.reset(self.ctx.frontend.cfg.timeouts.client)
        sp = self.server_proto
        if sp is not None and sp.transport is not None:
            if self.server_timer is not None:
                self.server_timer.reset(self._server_timeout_value())
            sp.transport.write(data)
        else:
            self.pending.append(data)

    def readConnectionLost(self) -> None:
        """The client half-closed: pass the FIN on once pending bytes are written."""
        self.client_eof = True
        sp = self.server_proto
        if sp is not None and sp.transport is not None:
            sp.transport.loseWriteConnection()
        if self.server_eof_seen:
            self._close_both("--")

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.admitted:
            return
        self.closed = True
        self._cancel_timers()
        if self.connect is not None and not self.connect.finished:
            self.connect.cancel()
            if self.termination == "--":
                self.termination = "CC"
        sp = self.server_proto
        if sp is not None and sp.transport is not None:
            sp.transport.loseConnection()
        else:
            self._finish()

    # -- server side ---------------------------------------------------

    def server_connected(self, srv: Server, proto: Any) -> None:
        if self.closed:
            proto.transport.loseConnection()
            self.server = srv
            proto.session = None
            self.ctx.backend.release(srv)  # type: ignore[union-attr]
            return
        self.server = srv
        srv.sessions.add(self)
        proto.session = self
        self.server_proto = proto
        st = proto.transport
        ct = self.transport
        if srv.cfg.send_proxy:
            st.write(proxy_header(srv.cfg.send_proxy, ct.getPeer(), ct.getHost()))  # type: ignore[union-attr]
        if self.pending:
            st.write(b"".join(self.pending))
            self.pending = []
        if self.client_eof:
            st.loseWriteConnection()
        # Each side is the other's producer: a slow reader pauses the fast writer.
        ct.registerProducer(st, True)  # type: ignore[union-attr]
        st.registerProducer(ct, True)
        ct.resumeProducing()  # type: ignore[union-attr]
        self.server_timer = self.ctx.reactor.callLater(self._server_timeout_value(), self._server_timeout)

    def server_failed(self, reason: str) -> None:
        # HAProxy's termination states: sQ timed out in the queue, SC no connection to a server.
        self.termination = "sQ" if reason == QUEUE_TIMEOUT else "SC"
        be = self.ctx.backend
        if reason == NO_SERVER and be is not None:
            self.log.warn("{frontend}: no server available in backend {backend}, closing the connection",
                          frontend=self.ctx.frontend.name, backend=be.name)
        self._close_client()

    def from_server(self, data: bytes) -> None:
        self.bytes_out += len(data)
        if self.server_timer is not None:
            self.server_timer.reset(self._server_timeout_value())
        if self.client_timer is not None:
            self.client_timer.reset(self.ctx.frontend.cfg.timeouts.client)
        self.transport.write(data)  # type: ignore[union-attr]

    def server_eof(self) -> None:
        self.server_eof_seen = True
        if not self.closed:
            self.transport.loseWriteConnection()  # type: ignore[union-attr]
        if self.client_eof:
            self._close_both("--")

    def server_lost(self, reason: Failure | None) -> None:
        self.server_proto = None
        if self.server_timer is not None and self.server_timer.active():
            self.server_timer.cancel()
        self.server_timer = None
        if not self.closed:
            if self.termination == "--" and not self.server_eof_seen:
                self.termination = "SD"
            self.transport.loseConnection()  # type: ignore[union-attr]
        else:
            self._finish()

    # -- timers and closing --------------------------------------------

    def _server_timeout_value(self) -> float:
        be = self.ctx.backend
        return be.cfg.timeouts.server if be is not None else 30.0

    def _client_timeout(self) -> None:
        self.client_timer = None
        self.termination = "cD"
        self._abort_both()

    def _server_timeout(self) -> None:
        self.server_timer = None
        self.termination = "sD"
        self._abort_both()

    def _cancel_timers(self) -> None:
        for t in (self.client_timer, self.server_timer):
            if t is not None and t.active():
                t.cancel()
        self.client_timer = self.server_timer = None

    def _close_client(self) -> None:
        self._cancel_timers()
        self.transport.loseConnection()  # type: ignore[union-attr]

    def _close_both(self, termination: str) -> None:
        sp = self.server_proto
        if sp is not None and sp.transport is not None:
            sp.transport.loseConnection()
        self.transport.loseConnection()  # type: ignore[union-attr]

    def _abort_both(self) -> None:
        sp = self.server_proto
        if sp is not None and sp.transport is not None:
            sp.transport.abortConnection()
        self.transport.abortConnection()  # type: ignore[union-attr]

    def abort(self) -> None:
        """Operator or stop: cut this session now."""
        if self.termination == "--":
            self.termination = "KD"
        self._abort_both()

    def graceful_close(self) -> None:
        """Stopping: a TCP session has no idle point; let it run until grace ends."""

    def _finish(self) -> None:
        """Both legs are gone: account and log, once."""
        if not self.admitted:
            return
        self.admitted = False
        ctx = self.ctx
        fe = ctx.frontend
        be = ctx.backend
        srv = self.server
        tt = ctx.reactor.seconds() - self.start
        if ctx.access.enabled:
            # Logged before the counters drop, so the counts include this session (as HAProxy).
            self._log_access(tt)
        fe.sessions.discard(self)
        ctx.leave()
        fe.bytes_in += self.bytes_in
        fe.bytes_out += self.bytes_out
        if srv is not None and be is not None:
            srv.sessions.discard(self)
            srv.bytes_in += self.bytes_in
            srv.bytes_out += self.bytes_out
            be.bytes_in += self.bytes_in
            be.bytes_out += self.bytes_out
            be.release(srv)
        if be is not None:
            be.total_time.observe(tt)

    def _log_access(self, tt: float) -> None:
        ctx = self.ctx
        fe = ctx.frontend
        be = ctx.backend
        srv = self.server
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        conn = self.connect
        ctx.access.tcp(
            client=getattr(peer, "host", "unix"), client_port=getattr(peer, "port", 0),
            start=self.start, frontend=fe.name,
            backend=be.name if be is not None else "<NOSRV>",
            server=srv.name if srv is not None else "<NOSRV>",
            tw=conn.tw if conn is not None else None,
            tc=conn.tc if conn is not None else None, tt=tt,
            bytes_read=self.bytes_out, termination=self.termination,
            actconn=ctx.pool.cur_conns, feconn=fe.cur_sess,
            beconn=be.cur_sess if be is not None else 0,
            srvconn=srv.cur_sess if srv is not None else 0,
            retries=conn.retries if conn is not None else 0,
            srv_queue=len(srv.queue) if srv is not None else 0,
            be_queue=len(be.queue) if be is not None else 0,
        )


class TCPFrontendFactory(Factory):
    """One per frontend; builds a session per accepted connection."""

    noisy = False

    def __init__(self, ctx: ProxyContext) -> None:
        self.ctx = ctx

    def logPrefix(self) -> str:
        # Twisted's listening port logs "<prefix> starting on <port>".
        return "frontend %s (tcp)" % (self.ctx.frontend.name,)

    def buildProtocol(self, addr: Any) -> TCPSession:
        p = TCPSession(self.ctx)
        p.factory = self
        return p
