"""Finding a server and connecting to it: queue, connect timeout, retries, redispatch.

Shared by tcp and http mode. One ``ServerConnect`` per client-side attempt
chain; it owns its timers and tells its owner exactly once how it ended.
"""
from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, Callable, Protocol as TypingProtocol

from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

if TYPE_CHECKING:
    from twisted.internet.interfaces import IConnector, IDelayedCall

    from lbd.pool import Backend, Server

# Why a connection could not be made, for access logs and error pages.
NO_SERVER = "no server available"
QUEUE_TIMEOUT = "queue timeout"
CONNECT_FAILED = "connection failed"


class ConnectOwner(TypingProtocol):
    def server_connected(self, srv: Server, proto: Any) -> None: ...
    def server_failed(self, reason: str) -> None: ...


class _AttemptFactory(ClientFactory):
    """Builds the server-side protocol of one connect attempt."""

    noisy = False

    def __init__(self, owner: ServerConnect, srv: Server) -> None:
        self.owner = owner
        self.srv = srv
        self.done = False

    def buildProtocol(self, addr: Any) -> Protocol | None:
        proto = self.owner.protocol_factory()
        proto.factory = self  # type: ignore[attr-defined]
        return proto

    def connected(self, proto: Any) -> None:
        """Called by the server-side protocol's connectionMade."""
        if self.done:
            proto.transport.abortConnection()
            return
        self.done = True
        self.owner._connected(self, proto)

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        if not self.done:
            self.done = True
            self.owner._failed(self, reason)

    def clientConnectionLost(self, connector: IConnector, reason: Failure) -> None:
        pass


class ServerConnect:
    """Connects to a server of ``backend`` for ``client``, retrying as configured.

    ``client`` is the balancing key (the client's address) for ``source``.
    Counters: the server and backend's ``econ`` per failed attempt, ``wretr``
    per retry, ``wredis`` when a retry goes to another server.
    """

    __slots__ = ("reactor", "backend", "client", "protocol_factory", "owner", "retries_left",
                 "retries", "server", "_timer", "_attempt", "_connector", "finished",
                 "queued_at", "tw", "attempt_start", "tc", "tls_options", "_avoid", "reuse")

    def __init__(self, reactor: Any, backend: Backend, client: bytes,
                 protocol_factory: Callable[[], Protocol], owner: ConnectOwner,
                 avoid: Server | None = None,
                 reuse: Callable[[Server], Any] | None = None) -> None:
        self.reactor = reactor
        self.backend = backend
        self.client = client
        self.protocol_factory = protocol_factory
        self.owner = owner
        self.retries_left = backend.cfg.retries
        self.retries = 0
        self.server: Server | None = None
        self._timer: IDelayedCall | None = None
        self._attempt: _AttemptFactory | None = None
        self._connector: IConnector | None = None
        self.finished = False
        self.queued_at: float | None = None
        self.tw: float | None = 0.0       # time spent in the queue
        self.tc: float | None = None      # time of the successful connect
        self.attempt_start = 0.0
        self._avoid = avoid
        # http mode: offers a pooled idle connection to the server given a slot
        # (returns its protocol, or None to connect afresh).
        self.reuse = reuse

    def start(self, srv: Server | None = None) -> None:
        """Begin; ``srv`` is a server the caller already picked (http mode's fast path)."""
        be = self.backend
        if srv is None:
            srv = be.pick(self.client, self._avoid)
            if srv is None and self._avoid is not None:
                srv = be.pick(self.client)
        if srv is not None:
            self._begin(srv)
            return
        if be.available:
            # Every usable server is at its maxconn: wait for a slot.
            self.queued_at = self.reactor.seconds()
            be.enqueue(self)
            self._timer = self.reactor.callLater(be.cfg.timeouts.queue, self._queue_timeout)
            return
        self._finish_failed(NO_SERVER)

    # -- queue ---------------------------------------------------------

    def dequeued(self, srv: Server) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self.queued_at is not None:
            self.tw = self.reactor.seconds() - self.queued_at
        self._begin(srv)

    def _queue_timeout(self) -> None:
        self._timer = None
        self.backend.dequeue(self)
        if self.queued_at is not None:
            self.tw = self.reactor.seconds() - self.queued_at
        self._finish_failed(QUEUE_TIMEOUT)

    # -- attempts ------------------------------------------------------

    def _begin(self, srv: Server) -> None:
        """Take a slot on ``srv`` and connect to it."""
        self.server = srv
        self.backend.take(srv)
        reuse = self.reuse
        if reuse is not None:
            proto = reuse(srv)
            if proto is not None:
                self.tc = 0.0
                self.finished = True
                self.owner.server_connected(srv, proto)
                return
        self._connect(srv)

    def _connect(self, srv: Server) -> None:
        attempt = _AttemptFactory(self, srv)
        self._attempt = attempt
        reactor = self.reactor
        timeout = self.backend.cfg.timeouts.connect
        self.attempt_start = reactor.seconds()
        factory: ClientFactory = attempt
        if srv.cfg.tls:
            factory = _tls_wrap(srv, attempt)
        # Our own timer rather than connectTCP's, so a task.Clock drives it in tests.
        self._connector = reactor.connectTCP(srv.host, srv.port, factory, timeout=timeout + 1)
        self._timer = reactor.callLater(timeout, self._connect_timeout, attempt)

    def _connect_timeout(self, attempt: _AttemptFactory) -> None:
        self._timer = None
        if attempt.done or attempt is not self._attempt:
            return
        attempt.done = True
        if self._connector is not None:
            try:
                self._connector.disconnect()
            except Exception:
                pass
        self._failed(attempt, None)

    def _connected(self, attempt: _AttemptFactory, proto: Any) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.tc = self.reactor.seconds() - self.attempt_start
        self.backend.connect_time.observe(self.tc)
        transport = proto.transport
        try:
            transport.setTcpNoDelay(True)
        except Exception:
            pass
        self.finished = True
        assert self.server is not None
        self.owner.server_connected(self.server, proto)

    def _failed(self, attempt: _AttemptFactory, reason: Failure | None) -> None:
        """One attempt failed (reason None: our connect timeout)."""
        if attempt is not self._attempt or self.finished:
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        srv = attempt.srv
        be = self.backend
        srv.econ += 1
        be.econ += 1
        be.release(srv)
        self.server = None
        if self.retries_left <= 0:
            self._finish_failed(CONNECT_FAILED)
            return
        self.retries_left -= 1
        self.retries += 1
        srv.wretr += 1
        be.wretr += 1
        nxt = srv
        if be.cfg.redispatch:
            other = be.pick(self.client, srv)
            if other is not None and other is not srv:
                srv.wredis += 1
                be.wredis += 1
                nxt = other
            elif other is None:
                nxt = None  # type: ignore[assignment]
        elif not srv.usable or srv.full:
            nxt = None  # type: ignore[assignment]
        if nxt is None:
            if be.available:
                self.queued_at = self.reactor.seconds()
                be.enqueue(self)
                self._timer = self.reactor.callLater(be.cfg.timeouts.queue, self._queue_timeout)
                return
            self._finish_failed(NO_SERVER)
            return
        self._begin(nxt)

    def cancel(self) -> None:
        """The client went away: stop whatever is under way, free any slot."""
        if self.finished:
            return
        self.finished = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.backend.dequeue(self)
        if self._attempt is not None and not self._attempt.done:
            self._attempt.done = True
            if self._connector is not None:
                try:
                    self._connector.disconnect()
                except Exception:
                    pass
            if self.server is not None:
                self.backend.release(self.server)
                self.server = None

    def _finish_failed(self, reason: str) -> None:
        self.finished = True
        self.owner.server_failed(reason)


def _tls_wrap(srv: Server, factory: ClientFactory) -> ClientFactory:
    """Wrap a client factory in TLS: verified by default, SNI, TLS 1.2 or newer."""
    from twisted.internet import ssl
    from twisted.protocols.tls import TLSMemoryBIOFactory

    cfg = srv.cfg
    hostname = cfg.tls_sni or cfg.host
    extra: dict[str, Any] = {"raiseMinimumTo": ssl.TLSVersion.TLSv1_2}
    if not cfg.tls_verify:
        ctx = ssl.CertificateOptions(verify=False, raiseMinimumTo=ssl.TLSVersion.TLSv1_2)
        creator: Any = _NoVerifyCreator(ctx, hostname)
    else:
        if cfg.tls_ca:
            with open(cfg.tls_ca, "rb") as f:
                trust = ssl.Certificate.loadPEM(f.read())
        else:
            trust = ssl.platformTrust()
        creator = ssl.optionsForClientTLS(hostname, trustRoot=trust, extraCertificateOptions=extra)
    return TLSMemoryBIOFactory(creator, True, factory)


@implementer(IOpenSSLClientConnectionCreator)
class _NoVerifyCreator:
    """Client TLS without verification (``tls_verify = false``), still sending SNI."""

    def __init__(self, options: Any, hostname: str) -> None:
        self.options = options
        self.hostname = hostname.encode("idna")

    def clientConnectionForTLS(self, tlsProtocol: Any) -> Any:
        from OpenSSL import SSL

        conn = SSL.Connection(self.options.getContext(), None)
        conn.set_app_data(tlsProtocol)
        try:
            socket.inet_pton(socket.AF_INET, self.hostname.decode())
        except OSError:
            try:
                socket.inet_pton(socket.AF_INET6, self.hostname.decode())
            except OSError:
                conn.set_tlsext_host_name(self.hostname)
        return conn

