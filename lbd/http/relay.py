"""HTTP mode: the client and server protocols, server connection pooling, errors.

One ``HTTPSession`` per client connection, one ``ServerConnection`` per server
connection; server connections outlive requests and clients and wait in
``Server.idle`` between requests. A session serves one request at a time: the
request parser is paused at the end of each request, so pipelined requests
wait in its buffer and are answered in order.

Flow control: the session is the client transport's (permanent) producer and
each server connection its own transport's; each forwards pause/resume to the
other side of the exchange it is part of, so a slow reader pauses the fast
writer in both directions and no body is ever buffered whole.

The hot path avoids Deferreds, per-request factories and timer churn
(``Deadline``), builds each head as a list joined once, and coalesces what one
server read produces for the client into one write.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer, ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from lbd import fastpath
from lbd.connect import NO_SERVER, QUEUE_TIMEOUT, ServerConnect
from lbd.http.deadline import Deadline
from lbd.http.errors import render
from lbd.http.parser import RequestParser, ResponseParser
from lbd.http.routing import Router
from lbd.logsetup import Logger
from lbd.tcp import proxy_header

if TYPE_CHECKING:
    from lbd.pool import Backend, Server
    from lbd.tcp import ProxyContext

# Methods a request may be retried with on a fresh connection when its
# connection closed before any response byte (RFC 9110 9.2.2), if bodyless.
IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"))

# Idle server connections kept per server; beyond this they are closed.
MAX_IDLE_PER_SERVER = 256

# Parser bytes buffered behind an in-flight request (pipelining) before the
# client is no longer read from.
PIPELINE_LIMIT = 64 * 1024

# Hop-by-hop headers (RFC 9110 7.6.1), removed in both directions. The
# framing headers are kept even when Connection names them: the body is
# forwarded with its framing.
_HOP = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"))
_HOP_FWD = _HOP | frozenset((b"x-forwarded-proto", b"x-forwarded-host"))
_HOP_UPGRADE = _HOP - {b"upgrade"}
_HOP_UPGRADE_FWD = _HOP_FWD - {b"upgrade"}
_KEEP = frozenset((b"content-length", b"transfer-encoding", b"host"))
_KEEP_UPGRADE = _KEEP | {b"upgrade"}

# Client session states.
_IDLE = 0       # between requests: waiting for a request's first byte
_HEAD = 1       # a request head is arriving
_BUSY = 2       # a request is being proxied (request and/or response under way)
_TUNNEL = 3     # upgraded (101) or CONNECT: bytes relayed both ways
_CLOSED = 4     # closing or closed: nothing more is read or answered

# What the client deadline means when it fires.
_K_IDLE = 0     # keep-alive idle: close quietly
_K_FIRST = 1    # new connection, nothing received yet (timeout.http_request): close quietly
_K_HEAD = 2     # the head is incomplete after timeout.http_request: 408
_K_CLIENT = 3   # client inactivity (timeout.client) while it sends a body or blocks our writes
_K_TUNNEL = 4   # tunnel inactivity (timeout.tunnel)
_K_LINGER = 5   # lingering close after an error: stop waiting for the client's FIN

# How long a connection closed after an error keeps reading (and discarding)
# what the client still sends, so that the kernel does not answer those bytes
# with a reset that could destroy the error response before it is read.
LINGER = 2.0

# Reasons the client transport is paused (a bit each).
_P_CONNECT = 1      # request body waits for a server connection
_P_SERVER = 2       # the server's socket buffer is full
_P_PIPELINE = 4     # too many pipelined bytes wait behind the current request

_HTTP10 = b"HTTP/1.0"


def _ssl_error(reason: Failure | None) -> bool:
    if reason is None:
        return False
    try:
        from OpenSSL import SSL
    except ImportError:  # pragma: no cover
        return False
    return reason.check(SSL.Error) is not None


class HTTPFrontendFactory(Factory):
    """One per frontend (http mode); builds an ``HTTPSession`` per client connection."""

    noisy = False

    def __init__(self, ctx: ProxyContext) -> None:
        self.ctx = ctx
        self._router = Router(ctx.frontend.cfg.routes)
        reactor = ctx.reactor

        def server_protocol() -> ServerConnection:
            return ServerConnection(reactor)

        self.server_protocol = server_protocol

    @property
    def router(self) -> Router:
        routes = self.ctx.frontend.cfg.routes
        if self._router.source is not routes:      # a reload changed the frontend
            self._router = Router(routes)
        return self._router

    def buildProtocol(self, addr: Any) -> HTTPSession:
        p = HTTPSession(self)
        p.factory = self
        return p


@implementer(IHalfCloseableProtocol, IPushProducer)
class HTTPSession(Protocol):
    """One client connection in http mode.

    It is the request parser's handler, the client transport's producer of
    response bytes, and ``ServerConnect``'s owner.
    """

    log = Logger()

    def __init__(self, factory: HTTPFrontendFactory) -> None:
        ctx = factory.ctx
        self.hfactory = factory
        self.ctx = ctx
        self.fe = ctx.frontend
        self.reactor = ctx.reactor
        self.state = _IDLE
        self.admitted = False
        self.parser: RequestParser | None = None
        self.deadline = Deadline(ctx.reactor, self._client_deadline)
        self.client_ip = ""
        self.client_port = 0
        self.key = b""
        self.fwd = b""                # X-Forwarded-For/-Proto lines, built once per connection
        self.driving = False          # inside _drive (the parser's only entry)
        self.resume_pending = False
        self.dispatch_pending = False
        self.cpause = 0               # _P_* reasons the client transport is paused
        self.client_blocked = False   # the client's socket buffer is full
        self.client_eof = False       # the client half-closed
        self.closing = False          # graceful stop: close after the current request
        self.nreq = 0
        self.t_idle = 0.0             # start of the wait for this request (accept or last response)
        self.cbuf: list[bytes] = []   # bytes for the client produced by one server read
        # the current request
        self.head: Any = None
        self.backend: Backend | None = None
        self.server: Server | None = None
        self.held: Server | None = None     # the server whose slot (cur_sess) this request holds
        self.retried_from: Server | None = None
        self.sconn: ServerConnection | None = None
        self.connect: ServerConnect | None = None
        self.pending: list[bytes] = []
        self.out_head = b""
        self.method = b""
        self.req_body = False
        self.req_done = False
        self.resp_started = False
        self.resp_done = False
        self.upgrade = False
        self.retryable = False
        self.keep = True
        self.status = -1
        self.term = "--"
        self.retries = 0
        self.t_start = 0.0
        self.t_head = 0.0
        self.t_sent = 0.0
        self.tw: float | None = None
        self.tc: float | None = None
        self.tr: float | None = None
        self.to_client = 0
        self.to_server = 0
        self.from_server = 0
        self.expect_continue = False
        self.v10 = False

    # ------------------------------------------------------------ connection

    def connectionMade(self) -> None:
        ctx = self.ctx
        transport = self.transport
        now = self.reactor.seconds()
        self.t_idle = self.t_start = now
        peer = transport.getPeer()  # type: ignore[union-attr]
        self.client_ip = getattr(peer, "host", "unix")
        self.client_port = getattr(peer, "port", 0)
        if not ctx.admit():
            # Over a maxconn: say so, as HAProxy does with nothing to queue.
            self.state = _CLOSED
            transport.write(render(503, self.fe.cfg.errorfiles, close=True))  # type: ignore[union-attr]
            transport.loseConnection()  # type: ignore[union-attr]
            return
        self.admitted = True
        self.fe.sessions.add(self)
        try:
            transport.setTcpNoDelay(True)  # type: ignore[union-attr]
        except Exception:
            pass
        fastpath.adopt(transport)
        self.key = self.client_ip.encode("ascii", "replace") if hasattr(peer, "host") else b""
        proto = b"https" if ISSLTransport.providedBy(transport) else b"http"
        fwd = [b"X-Forwarded-Proto: " + proto + b"\r\n"]
        if hasattr(peer, "host"):
            fwd.insert(0, b"X-Forwarded-For: " + self.key + b"\r\n")
        self.fwd = b"".join(fwd)
        cfg = self.fe.cfg
        self.parser = RequestParser(self, max_header_size=cfg.max_header_size)
        transport.registerProducer(self, True)  # type: ignore[union-attr]
        self.deadline.set(cfg.timeouts.http_request, _K_FIRST)

    def dataReceived(self, data: bytes) -> None:
        state = self.state
        self.fe.bytes_in += len(data)
        if state == _TUNNEL:
            sc = self.sconn
            if sc is not None:
                self.to_server += len(data)
                sc.transport.write(data)  # type: ignore[union-attr]
                self.deadline.set(self._tunnel_timeout(), _K_TUNNEL)
            return
        if state == _CLOSED:
            return
        if state == _IDLE:
            self.state = _HEAD          # _head_starts(), inlined
            self.t_start = self.reactor.seconds()
        elif state == _BUSY and not self.req_done and not self.expect_continue:
            self.deadline.set(self.fe.cfg.timeouts.client, _K_CLIENT)
        self._drive(data)

    def _head_starts(self) -> None:
        """The first byte of a request (its deadline is armed only if the head stays incomplete)."""
        self.state = _HEAD
        self.t_start = self.reactor.seconds()

    def _head_incomplete(self) -> None:
        """A partial head waits: timeout.http_request runs (from accept on a new connection)."""
        deadline = self.deadline
        kind = deadline.kind
        if kind == _K_HEAD and deadline.when is not None:
            return
        if kind == _K_FIRST and deadline.when is not None:
            deadline.kind = _K_HEAD
        else:
            deadline.set(self.fe.cfg.timeouts.http_request - (self.reactor.seconds() - self.t_start), _K_HEAD)

    def _drive(self, data: bytes | None = None) -> None:
        """The only entry into the request parser; loops instead of recursing.

        Feeds ``data`` (or resumes the parser), then dispatches a request
        whose head arrived and resumes the parser for the next pipelined one,
        until nothing is left to do.
        """
        if self.driving:
            self.resume_pending = True
            return
        parser = self.parser
        assert parser is not None
        self.driving = True
        try:
            if data is not None:
                parser.feed(data)
            else:
                self.resume_pending = True
            while True:
                if self.dispatch_pending:
                    self.dispatch_pending = False
                    self._dispatch_request()
                elif self.resume_pending:
                    self.resume_pending = False
                    if self.state == _IDLE:
                        parser.resume()
                else:
                    break
            if self.state == _IDLE and parser.buffered:
                self._head_starts()         # part of the next head is here
        except Exception:
            self.log.failure("{frontend}: error in an HTTP session, closing it", frontend=self.fe.name)
            self.driving = False
            self.abort()
            return
        self.driving = False
        state = self.state
        if state == _IDLE:
            if self.client_eof or self.closing:
                self._close_client()
                return
        elif state == _HEAD:
            if self.client_eof:
                self.readConnectionLost()
                return
            self._head_incomplete()
        if state == _BUSY and parser.buffered > PIPELINE_LIMIT:
            self._pause_client(_P_PIPELINE)
        elif self.cpause & _P_PIPELINE:
            self._resume_client(_P_PIPELINE)

    def readConnectionLost(self) -> None:
        """The client half-closed: answer what it sent, then close."""
        self.client_eof = True
        state = self.state
        if state == _CLOSED:
            if self.transport is not None:
                self.transport.loseConnection()
            return
        if state == _TUNNEL:
            sc = self.sconn
            if sc is not None and sc.transport is not None:
                lwc = getattr(sc.transport, "loseWriteConnection", None)
                if lwc is not None:
                    lwc()
                else:
                    sc.transport.loseConnection()
            return
        if state == _IDLE:
            self._close_client()
        elif state == _HEAD:
            # Closed in the middle of a head: nothing to answer.
            self.status = 400
            self.term = "CR"
            self.fe.ereq += 1
            self._log_request(self.reactor.seconds())
            self._close_client()
        elif state == _BUSY and not self.req_done:
            self.term = "CR" if not self.resp_started else "CD"
            self._client_gone()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.admitted:
            return
        self.admitted = False
        self.deadline.stop()
        state = self.state
        self.state = _CLOSED
        if state == _TUNNEL:
            sc = self.sconn
            if sc is not None:
                self._drop_server(graceful=True)
            self._account_and_log(self.reactor.seconds())
        elif state == _BUSY:
            if self.term == "--":
                if self.connect is not None:
                    self.term = "CQ" if self.connect.server is None else "CC"
                elif not self.req_done:
                    self.term = "CR" if not self.resp_started else "CD"
                elif not self.resp_started:
                    self.term = "CH"
                else:
                    self.term = "CD"
            self._client_gone()
        self.fe.sessions.discard(self)
        self.ctx.leave()

    def _client_gone(self) -> None:
        """The client aborted the current exchange: drop its server side and log it."""
        if self.state != _CLOSED:
            self.state = _CLOSED
            self._close_client(abort=True)
        if self.term[:1] == "C":
            self.fe.cli_abrt += 1
            be = self.backend
            if be is not None:
                be.cli_abrt += 1
            if self.server is not None:
                self.server.cli_abrt += 1
        if self.connect is not None:
            self.connect.cancel()
            self.connect = None
        if self.sconn is not None:
            self._drop_server(graceful=False)
        self._account_and_log(self.reactor.seconds())

    # ------------------------------------------------------------ requests

    def request_head(self, head: Any) -> None:
        now = self.reactor.seconds()
        if self.state == _IDLE:
            self.t_start = now
        self.state = _BUSY
        self.nreq += 1
        self.head = head
        self.t_head = now
        self.method = method = head.method
        self.status = -1
        self.term = "--"
        self.retries = 0
        self.tw = self.tc = self.tr = None
        self.to_client = self.to_server = self.from_server = 0
        self.req_done = self.resp_started = self.resp_done = False
        self.server = None
        self.retried_from = None
        fe = self.fe
        fe.req_tot += 1
        ctx = self.ctx
        pool = ctx.pool
        pool.cum_req += 1
        cl = head.content_length
        self.req_body = has_body = head.chunked or (cl is not None and cl > 0)
        self.v10 = v10 = head.version == _HTTP10
        self.keep = head.keep_alive and not self.closing
        self.expect_continue = head.expect_continue and has_body
        if has_body and not self.expect_continue:
            self.deadline.set(fe.cfg.timeouts.client, _K_CLIENT)
        else:
            self.deadline.clear()
        # Routing.
        host = head.host
        if method == b"CONNECT" and not host:
            host = head.target
        router = self.hfactory.router
        name = router.backend_name(method, host, head.target, head.headers) if router.routes else None
        be = pool.backends.get(name) if name is not None else ctx.backend
        if be is None:
            self.backend = None
            self._lbd_error(503, "SC")
            return
        self.backend = be
        be.req_tot += 1
        self.upgrade = upgrade = head.upgrade is not None
        self.retryable = not has_body and method in IDEMPOTENT
        # The head for the server, built once (and kept for a retry).
        forward = fe.cfg.forwardfor and be.cfg.forwardfor
        if upgrade:
            drop = _HOP_UPGRADE_FWD if forward else _HOP_UPGRADE
        else:
            drop = _HOP_FWD if forward else _HOP
        tokens = head.connection_tokens
        lens = _HOP_LENGTHS
        if tokens and not tokens <= drop:       # "keep-alive", "upgrade": nothing to add
            drop, lens = _widen_drop(tokens, drop, lens, upgrade)
        parts = [method, b" ", head.target, b" HTTP/1.0\r\n" if v10 else b" HTTP/1.1\r\n"]
        append = parts.append
        for name_, value in head.headers:
            if len(name_) in lens and name_.lower() in drop:
                continue
            append(name_)
            append(b": ")
            append(value)
            append(b"\r\n")
        if forward:
            append(self.fwd)
            if head.host:
                append(b"X-Forwarded-Host: " + head.host + b"\r\n")
        if upgrade:
            append(b"Connection: upgrade\r\n\r\n")
        elif v10:
            append(b"Connection: keep-alive\r\n\r\n")
        else:
            append(b"\r\n")
        self.out_head = b"".join(parts)
        # Dispatched once the parser returns: a malformed body in the same
        # read is rejected before anything reaches a server.
        self.dispatch_pending = True

    def request_body(self, raw: bytes) -> None:
        if self.state != _BUSY:
            return
        sc = self.sconn
        if sc is not None:
            self.to_server += len(raw)
            sc.transport.write(raw)  # type: ignore[union-attr]
        elif self.connect is not None or self.dispatch_pending:
            self.pending.append(raw)

    def request_end(self) -> None:
        self.parser.pause()  # type: ignore[union-attr]
        if self.state != _BUSY:
            return
        self.req_done = True
        if self.resp_done:
            self._finish_exchange()
            return
        if self.deadline.kind == _K_CLIENT and not self.client_blocked:
            self.deadline.clear()
        sc = self.sconn
        if sc is not None and not self.client_blocked:
            sc.deadline.set(sc.server_timeout)

    def request_error(self, status: int, reason: str) -> None:
        self.parser.pause()  # type: ignore[union-attr]
        state = self.state
        if state == _CLOSED:
            return
        self.log.debug("{frontend}: invalid request from {client}: {reason}",
                       frontend=self.fe.name, client=self.client_ip, reason=reason)
        self.fe.ereq += 1
        if state == _BUSY:
            # The head was fine, the body is not: what was sent is lost.
            if self.resp_started:
                self.term = "PD"
                self._abort_exchange(abort_client=True)
                return
            self.keep = False
            self._lbd_error(status, "PR")
            return
        # A bad head: nothing was forwarded.
        self.head = None
        self.backend = None
        self.server = None
        self.tw = self.tc = self.tr = None
        self.retries = 0
        self.to_client = 0
        self.status = status
        self.term = "PR"
        self.state = _CLOSED
        self.fe.count_status(status)
        self._write_client(render(status, self.fe.cfg.errorfiles, close=True))
        self._account_and_log(self.reactor.seconds())
        self._close_client(linger=True)

    # ------------------------------------------------------------ dispatch

    def _dispatch_request(self) -> None:
        if self.state != _BUSY or self.resp_done:
            return
        be = self.backend
        assert be is not None
        self._dispatch(be, None, not self.retryable)

    def _dispatch(self, be: Backend, avoid: Server | None, fresh: bool) -> None:
        """Find a server connection: a pooled one when allowed, else ServerConnect.

        Requests that cannot be retried (a body, or not idempotent) never go
        on a pooled connection: one the server has just closed would turn
        into an error for the client.
        """
        srv = be.pick(self.key, avoid)
        if srv is not None and not fresh and srv.idle:
            sc = srv.idle.pop()
            be.take(srv)
            self.tw = 0.0
            self.tc = 0.0
            self._attach(srv, sc)
            return
        conn = ServerConnect(self.reactor, be, self.key, self.hfactory.server_protocol, self,
                             avoid, None if fresh else _take_idle)
        self.connect = conn
        if self.req_body:
            self._pause_client(_P_CONNECT)
        conn.start(srv)

    def server_connected(self, srv: Server, proto: Any) -> None:
        """ServerConnect's success: a new (or pooled) connection to ``srv`` holds a slot."""
        conn = self.connect
        self.connect = None
        if conn is not None:
            self.tw = conn.tw
            self.tc = conn.tc
            self.retries += conn.retries
        if self.state != _BUSY:
            # The client left in the meantime.
            proto.release_to_pool(srv, True)
            srv.backend.release(srv)
            return
        self._attach(srv, proto)

    def server_failed(self, reason: str) -> None:
        """ServerConnect's failure: 503."""
        conn = self.connect
        self.connect = None
        if conn is not None:
            self.tw = conn.tw
            self.retries += conn.retries
        self._resume_client(_P_CONNECT)
        if self.state != _BUSY:
            return
        be = self.backend
        if reason == NO_SERVER and be is not None:
            self.log.warn("{frontend}: no server available in backend {backend}",
                          frontend=self.fe.name, backend=be.name)
        self._lbd_error(503, "sQ" if reason == QUEUE_TIMEOUT else "SC")

    def _attach(self, srv: Server, sc: ServerConnection) -> None:
        """Send the current request on ``sc``."""
        self.server = srv
        self.held = srv
        self.sconn = sc
        srv.sessions.add(self)
        prev = self.retried_from
        if prev is not None:
            self.retried_from = None
            if prev is not srv:
                prev.wredis += 1
                srv.backend.wredis += 1
        srv.req_tot += 1
        sc.begin(self, self.method)
        data = self.out_head
        if sc.nreq == 1 and srv.cfg.send_proxy:
            t = self.transport
            data = proxy_header(srv.cfg.send_proxy, t.getPeer(), t.getHost()) + data  # type: ignore[union-attr]
        if self.pending:
            data = data + b"".join(self.pending)
            self.pending = []
        self.to_server += len(data)
        self.t_sent = now = self.reactor.seconds()
        sc.transport.write(data)  # type: ignore[union-attr]
        # timeout.server runs while lbd waits on the server: not while the
        # client still sends its body (timeout.client), nor while the client
        # does not read (lbd stopped reading the server then).
        if self.client_blocked:
            sc.pause_reading()
        elif self.req_done or self.expect_continue:
            sc.deadline.set(sc.server_timeout, 0, now)
        if sc.blocked:
            self._pause_client(_P_SERVER)
        if self.cpause & _P_CONNECT:
            self._resume_client(_P_CONNECT)

    # ------------------------------------------------------------ responses

    def on_informational(self, head: Any) -> None:
        """A 1xx other than 101: passed on to HTTP/1.1 clients."""
        if self.v10:
            return
        self.cbuf.append(self._response_head(head, b""))
        if head.status == 100 and self.expect_continue:
            # The server now waits for the body: the client's turn.
            self.expect_continue = False
            if not self.req_done:
                self.deadline.set(self.fe.cfg.timeouts.client, _K_CLIENT)
                sc = self.sconn
                if sc is not None:
                    sc.deadline.clear()

    def on_response_head(self, head: Any) -> None:
        now = self.reactor.seconds()
        self.tr = tr = now - self.t_sent
        be = self.backend
        srv = self.server
        be.response_time.observe(tr)  # type: ignore[union-attr]
        self.status = status = head.status
        # Counters.count_status of the frontend, backend and server, inlined
        idx = status // 100 - 1
        if not 0 <= idx < 5:
            idx = 5
        self.fe.hrsp[idx] += 1
        be.hrsp[idx] += 1  # type: ignore[union-attr]
        srv.hrsp[idx] += 1  # type: ignore[union-attr]
        self.resp_started = True
        sc = self.sconn
        tunnel = (status == 101 and self.upgrade) or (self.method == b"CONNECT" and 200 <= status < 300)
        if tunnel:
            sc.tunnel_next = True  # type: ignore[union-attr]
            conn = b"Connection: upgrade\r\n" if status == 101 else b""
        else:
            keep = self.keep and not self.closing
            if keep and (head.body_until_close or (not self.req_done and self.req_body)):
                # The client cannot tell where this body ends, or the rest of
                # its request body will never be read.
                self.keep = keep = False
            if not keep:
                self.keep = False
                conn = b"Connection: close\r\n"
            elif self.v10:
                conn = b"Connection: keep-alive\r\n"
            else:
                conn = b""
        self.cbuf.append(self._response_head(head, conn, tunnel and status == 101))

    def _response_head(self, head: Any, conn: bytes, upgrade: bool = False) -> bytes:
        status = head.status
        reason = head.reason
        if status == 200 and reason == b"OK":
            parts = [b"HTTP/1.1 200 OK\r\n"]
        else:
            parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
        append = parts.append
        drop = _HOP_UPGRADE if upgrade else _HOP
        tokens = head.connection_tokens
        lens = _HOP_LENGTHS
        if tokens and not tokens <= drop:       # "keep-alive", "upgrade": nothing to add
            drop, lens = _widen_drop(tokens, drop, lens, upgrade)
        for name, value in head.headers:
            if len(name) in lens and name.lower() in drop:
                continue
            append(name)
            append(b": ")
            append(value)
            append(b"\r\n")
        append(conn)
        append(b"\r\n")
        return b"".join(parts)

    def on_response_body(self, raw: bytes) -> None:
        self.cbuf.append(raw)

    def on_response_end(self) -> None:
        self.resp_done = True

    def on_response_error(self, reason: str) -> None:
        """The server's response is invalid (or truncated): 502, and the connection is dropped."""
        be = self.backend
        srv = self.server
        sc = self.sconn
        lost = sc is not None and sc.lost
        if srv is not None:
            srv.eresp += 1
            if lost:
                srv.srv_abrt += 1
        if be is not None:
            be.eresp += 1
            if lost:
                be.srv_abrt += 1
        self.log.info("{backend}/{server}: invalid response: {reason}",
                      backend=be.name if be is not None else "-",
                      server=srv.name if srv is not None else "-", reason=reason)
        if not self.resp_started:
            self._lbd_error(502, "SH" if lost else "PH")
            return
        self.term = "SD" if lost else "PD"
        self._abort_exchange(abort_client=False)

    def after_server_read(self, sc: ServerConnection) -> None:
        """End of one server read: write what it produced, finish the exchange if done."""
        buf = self.cbuf
        if buf:
            self._flush_client()
        if self.sconn is not sc:
            return
        if sc.tunnel_next:
            self._start_tunnel(sc)
        elif self.resp_done:
            if self.req_done:
                self._finish_exchange()
            elif self.req_body:
                self.keep = False
                self._finish_exchange()

    def _flush_client(self) -> None:
        buf = self.cbuf
        data = buf[0] if len(buf) == 1 else b"".join(buf)
        buf.clear()
        self.to_client += len(data)
        self.transport.write(data)  # type: ignore[union-attr]

    def _write_client(self, data: bytes) -> None:
        self.to_client += len(data)
        self.transport.write(data)  # type: ignore[union-attr]

    # ------------------------------------------------------------ server trouble

    def server_lost(self, sc: ServerConnection, reason: Failure | None) -> None:
        """``sc`` closed while serving the current request (sc is already detached)."""
        srv = self.server
        be = self.backend
        assert srv is not None and be is not None
        self.sconn = None
        srv.sessions.discard(self)
        if self.cpause & _P_SERVER:
            self._resume_client(_P_SERVER)      # e.g. paused during a TLS handshake that failed
        if self.state == _TUNNEL:
            self.transport.loseConnection()  # type: ignore[union-attr]  # logged when the client is gone
            return
        if self.state != _BUSY:
            self._release_slot()
            return
        tls_failed = not sc.got_bytes and _ssl_error(reason)
        if tls_failed:
            srv.econ += 1
            be.econ += 1
            self.log.warn("{backend}/{server}: TLS handshake with the server failed: {error}",
                          backend=be.name, server=srv.name,
                          error=reason.getErrorMessage() if reason is not None else "")
        if not self.resp_started:
            replayable = (self.retryable or (tls_failed and not self.req_body))
            if not sc.got_bytes and replayable and self.retries < be.cfg.retries:
                # Nothing came back and nothing can have been acted on twice:
                # send it again on a fresh connection, preferably elsewhere.
                self.retries += 1
                srv.wretr += 1
                be.wretr += 1
                self._release_slot()
                self.server = None
                self.retried_from = srv
                if be.cfg.redispatch:
                    self._dispatch(be, srv, True)
                else:
                    conn = ServerConnect(self.reactor, be, self.key, self.hfactory.server_protocol,
                                         self)
                    self.connect = conn
                    conn.start(srv if srv.usable and not srv.full else None)
                return
            if tls_failed:
                self._lbd_error(503, "SC")
                return
            srv.eresp += 1
            be.eresp += 1
            srv.srv_abrt += 1
            be.srv_abrt += 1
            self._lbd_error(502, "SH")
            return
        # The response was under way: the client gets it truncated.
        srv.srv_abrt += 1
        be.srv_abrt += 1
        self.term = "SD"
        self.state = _CLOSED
        self._close_client()
        self._account_and_log(self.reactor.seconds())

    def server_timeout(self) -> None:
        """timeout.server expired on the current exchange's server connection."""
        if self.state == _TUNNEL:
            return
        if not self.resp_started:
            srv = self.server
            be = self.backend
            if srv is not None:
                srv.eresp += 1
            if be is not None:
                be.eresp += 1
            self._lbd_error(504, "sH")
            return
        self.term = "sD"
        self._abort_exchange(abort_client=True)

    def _abort_exchange(self, abort_client: bool) -> None:
        """The response cannot be completed: close both sides (the client gets what came), log."""
        self.state = _CLOSED
        if self.connect is not None:
            self.connect.cancel()
            self.connect = None
        if self.sconn is not None:
            self._drop_server(graceful=False)
        self._close_client(abort=abort_client)
        self._account_and_log(self.reactor.seconds())

    # ------------------------------------------------------------ lbd's own answers

    def _lbd_error(self, status: int, term: str) -> None:
        """Answer the current request with ``status`` instead of a server."""
        if self.connect is not None:
            self.connect.cancel()
            self.connect = None
        self._resume_client(_P_CONNECT)
        self.dispatch_pending = False
        self.pending = []
        if self.sconn is not None:
            self._drop_server(graceful=False)
        self.status = status
        self.term = term
        self.fe.count_status(status)
        be = self.backend
        if be is not None:
            be.count_status(status)
        if status == 408 or status == 400 or status == 413 or status == 431 or status == 414:
            self.keep = False
        keep = self.keep and (self.req_done or not self.req_body)
        if not keep:
            self.keep = False
        pages = be.cfg.errorfiles if be is not None and status in be.cfg.errorfiles else self.fe.cfg.errorfiles
        head = self.head
        v10 = head is not None and self.v10
        if self.cbuf:
            self._flush_client()      # 1xx already received stay in order
        self._write_client(render(status, pages, close=not keep, keep_alive_10=keep and v10,
                                  head_only=self.method == b"HEAD"))
        self.resp_started = True
        self.resp_done = True
        if self.req_done or not keep:
            self._finish_exchange()
        # else: a bodyless request whose request_end comes next from the parser.

    # ------------------------------------------------------------ end of an exchange

    def _finish_exchange(self) -> None:
        """Both the request and the response are complete (or the client closes now)."""
        now = self.reactor.seconds()
        sc = self.sconn
        if sc is not None:
            self.sconn = None
            srv = self.server
            srv.sessions.discard(self)  # type: ignore[union-attr]
            reusable = (self.req_done and sc.keep_alive_ok() and not srv.cfg.send_proxy  # type: ignore[union-attr]
                        and not self.ctx.pool.stopping)
            if self.cpause & _P_SERVER:
                self._resume_client(_P_SERVER)
            # Pooled before the slot is freed: a request queued for this
            # server then finds the connection.
            sc.release_to_pool(srv, reusable, now=now)  # type: ignore[arg-type]
        self._account_and_log(now)
        if self.keep and not self.closing and self.state == _BUSY:
            self.state = _IDLE
            self.t_idle = now
            self.head = None
            self.server = None
            self.deadline.set(self.fe.cfg.timeouts.keep_alive, _K_IDLE, now)
            parser = self.parser
            if (not self.driving and parser is not None and not parser.buffered and not self.client_eof
                    and not self.cpause):
                # What _drive() would do with nothing buffered: the parser, paused
                # at request_end with no input, only waits for the next request.
                parser.resume()
                return
            self._drive()
        else:
            # Unread input (a request body, pipelined requests): linger.
            unread = not self.req_done or bool(self.parser is not None and self.parser.buffered)
            self.state = _CLOSED
            self._close_client(linger=unread)

    def _account_and_log(self, now: float) -> None:
        """Counters and the access-log line of the current request, once."""
        ta = now - self.t_start
        be = self.backend
        srv = self.server
        fe = self.fe
        fe.bytes_out += self.to_client
        if be is not None:
            be.total_time.observe(ta)
            be.bytes_in += self.to_server
            be.bytes_out += self.from_server
            if srv is not None:
                srv.bytes_in += self.to_server
                srv.bytes_out += self.from_server
        if self.ctx.access.enabled:
            self._log_request(now)
        self.to_client = self.to_server = self.from_server = 0
        held = self.held
        if held is not None:
            self.held = None
            held.backend.release(held)

    def _release_slot(self) -> None:
        held = self.held
        if held is not None:
            self.held = None
            held.backend.release(held)

    def _log_request(self, now: float) -> None:
        ctx = self.ctx
        fe = self.fe
        be = self.backend
        srv = self.server
        head = self.head
        if head is None:
            line = "<BADREQ>"
        else:
            line = (b"%s %s %s" % (head.method, head.target, head.version)).decode("latin-1")
        ctx.access.http(
            client=self.client_ip, client_port=self.client_port, start=self.t_start,
            frontend=fe.name, backend=be.name if be is not None else fe.name,
            server=srv.name if srv is not None else "<NOSRV>",
            tq=(self.t_head - self.t_idle) if head is not None else None,
            tw=self.tw, tc=self.tc, tr=self.tr, ta=now - self.t_start,
            status=self.status, bytes_read=self.to_client, termination=self.term + "--",
            actconn=ctx.pool.cur_conns, feconn=fe.cur_sess,
            beconn=be.cur_sess if be is not None else 0,
            srvconn=srv.cur_sess if srv is not None else 0,
            retries=self.retries,
            srv_queue=len(srv.queue) if srv is not None else 0,
            be_queue=len(be.queue) if be is not None else 0,
            request_line=line,
        )

    def _drop_server(self, graceful: bool) -> None:
        """Detach the current server connection, close it, free its slot."""
        sc = self.sconn
        srv = self.server
        self.sconn = None
        if sc is None or srv is None:
            return
        srv.sessions.discard(self)
        sc.release_to_pool(srv, False, abort=not graceful)
        if self.cpause & _P_SERVER:
            self._resume_client(_P_SERVER)

    def _close_client(self, abort: bool = False, linger: bool = False) -> None:
        """Close the client connection; ``linger``: half-close and drain first (see LINGER)."""
        self.state = _CLOSED
        t = self.transport
        if t is None:
            return
        if self.parser is not None:
            self.parser.pause()
        if abort:
            t.abortConnection()  # type: ignore[attr-defined]
            return
        if linger and not self.client_eof:
            lwc = getattr(t, "loseWriteConnection", None)
            if lwc is not None:
                self.cpause = 0
                t.resumeProducing()  # type: ignore[attr-defined]
                lwc()
                self.deadline.set(min(LINGER, self.fe.cfg.timeouts.client), _K_LINGER)
                return
        t.loseConnection()

    # ------------------------------------------------------------ tunnels

    def _start_tunnel(self, sc: ServerConnection) -> None:
        """101 or 2xx to CONNECT: from now on bytes pass both ways untouched."""
        sc.tunnel_next = False
        sc.tunnel = True
        self.state = _TUNNEL
        sc.deadline.clear()
        rest = sc.parser.take_buffer()
        if rest:
            self.to_client += len(rest)
            self.transport.write(bytes(rest))  # type: ignore[union-attr]
        rest = self.parser.take_buffer()  # type: ignore[union-attr]
        if rest:
            self.to_server += len(rest)
            sc.transport.write(bytes(rest))  # type: ignore[union-attr]
        self._resume_client(_P_PIPELINE)
        self.deadline.set(self._tunnel_timeout(), _K_TUNNEL)
        if self.client_eof:
            lwc = getattr(sc.transport, "loseWriteConnection", None)
            if lwc is not None:
                lwc()

    def _tunnel_timeout(self) -> float:
        be = self.backend
        t = self.fe.cfg.timeouts.tunnel
        return max(t, be.cfg.timeouts.tunnel) if be is not None else t

    def tunnel_from_server(self, data: bytes) -> None:
        self.to_client += len(data)
        self.transport.write(data)  # type: ignore[union-attr]
        self.deadline.set(self._tunnel_timeout(), _K_TUNNEL)

    # ------------------------------------------------------------ timers

    def _client_deadline(self, kind: int) -> None:
        state = self.state
        if kind == _K_IDLE or kind == _K_FIRST:
            if state == _IDLE:
                self._close_client()
            return
        if kind == _K_HEAD:
            if state == _HEAD:
                self.fe.ereq += 1
                self.head = None
                self.backend = None
                self.server = None
                self.tw = self.tc = self.tr = None
                self.retries = 0
                self.to_client = 0
                self.status = 408
                self.term = "cR"
                self.fe.count_status(408)
                self._write_client(render(408, self.fe.cfg.errorfiles, close=True))
                self._account_and_log(self.reactor.seconds())
                self._close_client(linger=True)
            return
        if kind == _K_LINGER:
            if self.transport is not None:
                self.transport.loseConnection()
            return
        if kind == _K_TUNNEL:
            if state == _TUNNEL:
                self.term = "cD"
                if self.sconn is not None:
                    self._drop_server(graceful=False)
                self.transport.abortConnection()  # type: ignore[union-attr]  # logged in connectionLost
            return
        if kind == _K_CLIENT and state == _BUSY:
            if not self.req_done and not self.resp_started:
                self.fe.ereq += 1
                self.keep = False
                self._lbd_error(408, "cD")
                return
            self.term = "cD"
            self._abort_exchange(abort_client=True)

    # ------------------------------------------------------------ flow control

    def _pause_client(self, bit: int) -> None:
        if not self.cpause:
            self.transport.pauseProducing()  # type: ignore[union-attr]
        self.cpause |= bit

    def _resume_client(self, bit: int) -> None:
        if self.cpause & bit:
            self.cpause &= ~bit
            if not self.cpause and self.state != _CLOSED:
                self.transport.resumeProducing()  # type: ignore[union-attr]

    def pauseProducing(self) -> None:
        """The client's socket buffer is full: stop reading the server."""
        self.client_blocked = True
        sc = self.sconn
        if sc is not None:
            sc.pause_reading()
            sc.deadline.clear()
        if self.state == _BUSY:
            self.deadline.set(self.fe.cfg.timeouts.client, _K_CLIENT)

    def resumeProducing(self) -> None:
        self.client_blocked = False
        sc = self.sconn
        if sc is not None:
            sc.resume_reading()
            if self.state == _BUSY and (self.req_done or self.resp_started):
                sc.deadline.set(sc.server_timeout)
        if self.state == _BUSY and self.req_done and self.deadline.kind == _K_CLIENT:
            self.deadline.clear()

    def stopProducing(self) -> None:
        pass

    def server_blocked(self) -> None:
        """The server's socket buffer is full: stop reading the client; the server must read on."""
        self._pause_client(_P_SERVER)
        sc = self.sconn
        if sc is not None and self.state == _BUSY:
            sc.deadline.set(sc.server_timeout)

    def server_unblocked(self) -> None:
        self._resume_client(_P_SERVER)
        sc = self.sconn
        if sc is not None and self.state == _BUSY and not self.req_done and not self.resp_started:
            sc.deadline.clear()

    # ------------------------------------------------------------ operator

    def abort(self) -> None:
        """Operator or end of grace: cut this connection now."""
        if self.term == "--":
            self.term = "KD" if self.resp_started else "KR"
        if self.connect is not None:
            self.connect.cancel()
            self.connect = None
        if self.sconn is not None and self.state != _BUSY:
            self._drop_server(graceful=False)
        t = self.transport
        if t is not None:
            t.abortConnection()  # type: ignore[attr-defined]

    def graceful_close(self) -> None:
        """Stopping: close now if idle, else after the current response."""
        self.closing = True
        if self.state == _IDLE and not self.driving:
            self._close_client()


# Lengths of the header names that may be dropped, to skip lowering the rest.
_HOP_LENGTHS = frozenset(len(n) for n in _HOP_FWD)


def _widen_drop(tokens: frozenset[bytes], drop: frozenset[bytes], lens: frozenset[int],
                upgrade: bool) -> tuple[frozenset[bytes], frozenset[int]]:
    """Add the headers a Connection header names to the hop-by-hop set (both directions).

    Framing headers (and Upgrade when switching protocols) are never dropped.
    ``lens`` is a cheap pre-filter on name lengths, widened to match.
    """
    extra = tokens - (_KEEP_UPGRADE if upgrade else _KEEP) - drop
    if not extra:
        return drop, lens
    return drop | extra, lens | frozenset(len(n) for n in extra)


def _take_idle(srv: Server) -> ServerConnection | None:
    """ServerConnect's reuse hook: a pooled connection to ``srv``, if any."""
    idle = srv.idle
    return idle.pop() if idle else None


@implementer(IPushProducer)
class ServerConnection(Protocol):
    """One connection to a server; reused across requests and clients.

    It is the response parser's handler and its transport's producer of
    request bytes. Between requests it waits in ``Server.idle``.
    """

    log = Logger()

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.session: HTTPSession | None = None
        self.parser = ResponseParser(self)
        self.deadline = Deadline(reactor, self._deadline)
        self.idle_deadline = Deadline(reactor, self._idle_deadline)
        self.server: Server | None = None    # set while pooled
        self.nreq = 0
        self.got_bytes = False
        self.blocked = False                 # our transport's buffer is full
        self.read_paused = False
        self.tunnel = False
        self.tunnel_next = False
        self.lost = False
        self.head_keep_alive = False
        self.until_close = False
        self.server_timeout = 30.0

    def connectionMade(self) -> None:
        fastpath.adopt(self.transport)
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        self.factory.connected(self)

    # -- exchanges -------------------------------------------------------

    def begin(self, session: HTTPSession, method: bytes) -> None:
        """A request is about to be written on this connection."""
        self.session = session
        self.nreq += 1
        self.got_bytes = False
        self.head_keep_alive = False
        self.until_close = False
        self.server_timeout = session.backend.cfg.timeouts.server  # type: ignore[union-attr]
        if self.server is not None:          # taken from the pool
            self.server = None
            self.idle_deadline.clear()
        self.parser.expect(method, session.upgrade)

    def keep_alive_ok(self) -> bool:
        """The response is complete and the server keeps the connection open."""
        return (self.head_keep_alive and not self.until_close and not self.lost
                and not self.tunnel and not self.parser.buffered)

    def release_to_pool(self, srv: Server, reusable: bool, abort: bool = False,
                        now: float | None = None) -> None:
        """The exchange is over: wait in ``srv.idle`` or close (``now``: the clock, if just read)."""
        self.session = None
        if self.lost:
            return
        t = self.transport
        if reusable and len(srv.idle) < MAX_IDLE_PER_SERVER:
            if self.read_paused:
                self.read_paused = False
                t.resumeProducing()  # type: ignore[union-attr]
            self.server = srv
            self.deadline.clear()
            self.idle_deadline.set(srv.backend.cfg.timeouts.keep_alive, 0, now)
            srv.idle.append(self)
            return
        self.deadline.stop()
        if abort:
            t.abortConnection()  # type: ignore[union-attr]
        else:
            t.loseConnection()  # type: ignore[union-attr]

    def abort(self) -> None:
        """Close this connection now (e.g. an operator shut its server's sessions)."""
        s = self.session
        if s is not None:
            s.abort()
        elif self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    # -- bytes from the server ------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        s = self.session
        if s is None:
            # An idle connection must stay silent: anything now is a protocol error.
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        if self.tunnel:
            s.tunnel_from_server(data)
            return
        self.got_bytes = True
        s.from_server += len(data)
        try:
            self.parser.feed(data)
        except Exception:
            self.log.failure("error handling a server response")
            s.on_response_error("internal error")
        if self.session is s:
            s.after_server_read(self)
            # Still ours: more is due from the server (unless lbd stopped reading it).
            if self.session is s and not self.read_paused and not self.tunnel:
                self.deadline.set(self.server_timeout)
        elif s.cbuf:
            s._flush_client()

    # parser callbacks, passed on to the session of the current exchange
    def response_informational(self, head: Any) -> None:
        s = self.session
        if s is not None:
            s.on_informational(head)

    def response_head(self, head: Any) -> None:
        s = self.session
        if s is not None:
            self.head_keep_alive = head.keep_alive
            self.until_close = head.body_until_close
            s.on_response_head(head)

    def response_body(self, raw: bytes) -> None:
        s = self.session
        if s is not None:
            s.cbuf.append(raw)

    def response_end(self) -> None:
        s = self.session
        if s is not None:
            s.resp_done = True

    def response_error(self, reason: str) -> None:
        self.head_keep_alive = False
        s = self.session
        if s is not None:
            s.on_response_error(reason)

    # -- flow control ---------------------------------------------------

    def pauseProducing(self) -> None:
        self.blocked = True
        s = self.session
        if s is not None:
            s.server_blocked()

    def resumeProducing(self) -> None:
        self.blocked = False
        s = self.session
        if s is not None:
            s.server_unblocked()

    def stopProducing(self) -> None:
        pass

    def pause_reading(self) -> None:
        if not self.read_paused and not self.lost:
            self.read_paused = True
            self.transport.pauseProducing()  # type: ignore[union-attr]

    def resume_reading(self) -> None:
        if self.read_paused and not self.lost:
            self.read_paused = False
            self.transport.resumeProducing()  # type: ignore[union-attr]

    # -- timers and closing ------------------------------------------------

    def _deadline(self, kind: int) -> None:
        s = self.session
        if s is not None:
            s.server_timeout()

    def _idle_deadline(self, kind: int) -> None:
        srv = self.server
        if srv is not None and self.session is None:
            try:
                srv.idle.remove(self)
            except ValueError:
                pass
            self.server = None
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.lost = True
        self.deadline.stop()
        self.idle_deadline.stop()
        srv = self.server
        if srv is not None:
            self.server = None
            try:
                srv.idle.remove(self)
            except ValueError:
                pass
        s = self.session
        if s is None:
            return
        if self.tunnel:
            self.session = None
            s.server_lost(self, reason)
            return
        if self.got_bytes:
            # A body delimited by the close ends here; anything else is cut short.
            try:
                self.parser.feed_eof()
            except Exception:
                self.log.failure("error handling a server response")
            if self.session is s:
                s.after_server_read(self)
            if self.session is not s:
                return
        self.session = None
        s.server_lost(self, reason)
