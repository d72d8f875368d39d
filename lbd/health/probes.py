"""Health-check probes: one connection, one verdict in HAProxy's check statuses.

A probe connects to a target, talks its protocol, and fires a Deferred with a
``CheckResult`` (L4OK, L4CON, L7STS ...). It never errbacks, never raises, and
always ends within the target's ``timeout`` (``timeout.check``), whatever the
other side sends: garbage, a byte at a time, or nothing at all. What a result
means for the server (UP, DOWN) is ``lbd.health.state``'s business.

- ``tcp``: the connection is accepted (over TLS: the handshake completes).
- ``http``: ``METHOD PATH HTTP/1.1`` with ``Host`` and ``Connection: close``;
  the status must be in ``expect_status`` and, if given, ``expect_body`` must
  occur in the first 16 KiB of the (de-chunked) body.
- ``mysql``: HAProxy's mysql-check: read the greeting; with a ``user``, log in
  with no password and expect OK, then ``COM_QUIT``.
- ``galera``: log in with ``user``/``password`` (mysql_native_password), read
  ``wsrep_local_state`` and ``wsrep_ready``: healthy when Synced (4) and
  ready; Donor/Desynced (2) only with ``allow_donor``.

The MySQL wire protocol they speak is in ``lbd.health.mysql`` (written
there, no client library).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet import defer
from twisted.internet.error import ConnectError, ConnectionDone
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from lbd.health.mysql import (
    CLIENT_PLUGIN_AUTH, COM_QUERY, COM_QUIT, NATIVE_PASSWORD, ProtocolError, PacketReader, is_eof, lenenc,
    login_packet, native_password, packet, parse_error, parse_greeting, parse_row, printable, strip_nul,
)
from lbd.logsetup import Logger
from lbd.pool import CHECK_STATUSES

if TYPE_CHECKING:
    from twisted.internet.interfaces import IConnector, IDelayedCall

    from lbd.config import HealthConfig

# How much of an answer a check reads at most (HAProxy's check buffer, tune.bufsize).
CHECK_BUFFER = 16384

# Statuses that count as a passed check (HAProxy's CHK_RES_PASSED and CHK_RES_CONDPASS).
PASSED = frozenset(("L4OK", "L6OK", "L7OK", "L7OKC"))

# HAProxy's descriptions of the statuses lbd's checks report (src/check.c, check_statuses).
DESCRIPTIONS = CHECK_STATUSES
# Statuses whose code is part of the report (HAProxy: status >= HCHK_STATUS_L57DATA).
WITH_CODE = frozenset(("L7OK", "L7OKC", "L7STS"))


@dataclass(frozen=True)
class CheckResult:
    """One finished check: HAProxy status, layer-7 code if any, info text, duration in seconds."""

    status: str
    code: int | None
    desc: str
    duration: float

    @property
    def passed(self) -> bool:
        return self.status in PASSED

    def reason(self) -> str:
        """HAProxy's check info: ``Layer4 connection problem, info: "...", check duration: 1ms``."""
        parts = [DESCRIPTIONS.get(self.status, "Unknown")]
        if self.status in WITH_CODE and self.code is not None:
            parts.append("code: %d" % self.code)
        if self.desc:
            parts.append('info: "%s"' % _ascii_encode(self.desc))
        parts.append("check duration: %dms" % int(self.duration * 1000))
        return ", ".join(parts)


def _ascii_encode(text: str) -> str:
    """Quotes and control characters as ``\\xHH``, as HAProxy's chunk_asciiencode."""
    return "".join("\\x%02x" % ord(c) if c == '"' or ord(c) < 0x20 or ord(c) == 0x7F else c for c in text)


@dataclass(frozen=True)
class Target:
    """Where and how to check: address, the whole check's deadline (seconds), optional TLS wrapper."""

    host: str
    port: int
    timeout: float
    tls: Callable[[ClientFactory], ClientFactory] | None = None


Probe = Callable[[Any, Target], "defer.Deferred[CheckResult]"]


def make_probe(cfg: HealthConfig) -> Probe:
    """The probe for a backend's ``[health]`` section."""
    if cfg.type == "tcp":
        return tcp_probe
    if cfg.type == "http":
        return http_probe(cfg.method, cfg.path, cfg.host, cfg.expect_status, cfg.expect_body)
    if cfg.type == "mysql":
        return mysql_probe(cfg.user)
    if cfg.type == "galera":
        return galera_probe(cfg.user or "", cfg.password, cfg.allow_donor)
    raise ValueError("unknown check type %r" % (cfg.type,))


# -- the connection every probe makes -----------------------------------------------


@implementer(IHandshakeListener)
class _Check(Protocol):
    """One check connection: the deadline, the verdict (exactly once), the cleanup."""

    log = Logger()
    timeout_status = "L7TOUT"

    def __init__(self, clock: Any, timeout: float, tls: bool) -> None:
        self.clock = clock
        self.started = clock.seconds()
        self.tls = tls
        self.finished = False
        self.connected = False
        self.handshaken = False
        self.received_bytes = 0
        self.connector: IConnector | None = None
        self.deferred: defer.Deferred[CheckResult] = defer.Deferred(self._cancel)
        self._timer: IDelayedCall | None = clock.callLater(timeout, self._timed_out)

    # verdict

    def finish(self, status: str, code: int | None = None, desc: str = "", graceful: bool = False) -> None:
        """Report once and close: ``graceful`` sends what was written (COM_QUIT), else reset."""
        if self.finished:
            return
        self._close(graceful)
        self.deferred.callback(CheckResult(status, code, desc, max(self.clock.seconds() - self.started, 0.0)))

    def _close(self, graceful: bool) -> None:
        self.finished = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self.connected and self.transport is not None:
            if graceful:
                self.transport.loseConnection()
            else:
                self.transport.abortConnection()  # type: ignore[attr-defined]
        elif self.connector is not None:
            try:
                self.connector.stopConnecting()
            except Exception:     # not connecting any more (it just failed)
                pass

    def _cancel(self, d: defer.Deferred[CheckResult]) -> None:
        if not self.finished:
            self._close(False)

    def _timed_out(self) -> None:
        self._timer = None
        if not self.connected:
            self.finish("L4TOUT")
        elif self.tls and not self.handshaken:
            self.finish("L6TOUT")
        else:
            self.finish(self.timeout_status)

    # Twisted's side

    def connect_failed(self, reason: Failure) -> None:
        self.finish("L4CON", desc=_error_text(reason))

    def connectionMade(self) -> None:
        if self.finished:
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        self.connected = True
        self.guarded(self.on_connected)

    def handshakeCompleted(self) -> None:
        self.handshaken = True
        if not self.finished:
            self.guarded(self.on_handshake)

    def dataReceived(self, data: bytes) -> None:
        if self.finished:
            return
        self.received_bytes += len(data)
        self.guarded(self.on_data, data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.finished:
            return
        if self.tls and not self.handshaken:
            self.finish("L6RSP", desc=_error_text(reason))
        else:
            self.guarded(self.on_lost, reason)
            if not self.finished:
                self.finish("L7RSP", desc="connection closed")

    def guarded(self, f: Callable[..., None], *args: Any) -> None:
        """Run a protocol step; a bug there fails this check, never the daemon."""
        try:
            f(*args)
        except Exception:
            self.log.failure("health check {name} failed unexpectedly", name=type(self).__name__)
            self.finish("L7RSP", desc="invalid response")

    # for subclasses

    def on_connected(self) -> None:
        pass

    def on_handshake(self) -> None:
        pass

    def on_data(self, data: bytes) -> None:
        pass

    def on_lost(self, reason: Failure) -> None:
        pass


class _CheckFactory(ClientFactory):
    """Hands the one check protocol to its connection and reports connect failures."""

    noisy = False

    def __init__(self, check: _Check) -> None:
        self.check = check

    def buildProtocol(self, addr: Any) -> Protocol:
        return self.check

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        self.check.connect_failed(reason)

    def clientConnectionLost(self, connector: IConnector, reason: Failure) -> None:
        pass


def _launch(reactor: Any, target: Target, check: _Check) -> defer.Deferred[CheckResult]:
    factory: ClientFactory = _CheckFactory(check)
    try:
        if target.tls is not None:
            factory = target.tls(factory)
        # Our own deadline fires first; the connector's is only a backstop.
        check.connector = reactor.connectTCP(target.host, target.port, factory, timeout=target.timeout + 1)
    except Exception as e:
        check.finish("SOCKERR", desc=str(e) or type(e).__name__)
    return check.deferred


def _error_text(reason: Failure) -> str:
    """A short reason, as strerror() (``Connection refused``) where there is an errno."""
    err = reason.value
    if isinstance(err, ConnectError) and isinstance(err.osError, int):
        return os.strerror(err.osError)
    if isinstance(err, ConnectError) and err.args and isinstance(err.args[0], int):
        return os.strerror(err.args[0])
    if isinstance(err, ConnectionDone):
        return "connection closed"
    text = reason.getErrorMessage()
    # Twisted's texts end in ".": keep the first sentence, bounded.
    return text.strip().rstrip(".")[:200]


# -- tcp ------------------------------------------------------------------------------


class _TCPCheck(_Check):
    """Passes once the connection is up (L4OK), or its TLS handshake is done (L6OK)."""

    timeout_status = "L6TOUT"

    def on_connected(self) -> None:
        if not self.tls:
            self.finish("L4OK")

    def on_handshake(self) -> None:
        self.finish("L6OK")


def tcp_probe(reactor: Any, target: Target) -> defer.Deferred[CheckResult]:
    return _launch(reactor, target, _TCPCheck(reactor, target.timeout, target.tls is not None))


# -- http -----------------------------------------------------------------------------


def http_probe(method: str, path: str, host: str | None, expect_status: tuple[int, int],
               expect_body: str | None) -> Probe:
    """A probe sending ``method path`` and judging status and body."""
    body = expect_body.encode("utf-8") if expect_body is not None else None
    meth = method.encode("ascii")

    def probe(reactor: Any, target: Target) -> defer.Deferred[CheckResult]:
        from lbd.config import format_address

        host_header = (host or format_address(target.host, target.port)).encode("idna")
        request = b"".join((meth, b" ", path.encode("ascii"), b" HTTP/1.1\r\nHost: ", host_header,
                            b"\r\nConnection: close\r\nUser-Agent: lbd-health-check\r\n\r\n"))
        check = _HTTPCheck(reactor, target.timeout, target.tls is not None, request, expect_status, body,
                           meth == b"HEAD")
        return _launch(reactor, target, check)

    return probe


# HTTP reader states
_LINE, _HEADERS, _BODY = range(3)
# Body framings
_NONE, _LENGTH, _CHUNKED, _CLOSE = range(4)
# Chunked decoder states
_C_SIZE, _C_DATA, _C_CRLF, _C_END = range(4)


class _HTTPCheck(_Check):
    """An HTTP/1.1 request and a bounded, incremental read of its response."""

    def __init__(self, clock: Any, timeout: float, tls: bool, request: bytes,
                 expect_status: tuple[int, int], expect_body: bytes | None, head: bool) -> None:
        super().__init__(clock, timeout, tls)
        self.request = request
        self.lo, self.hi = expect_status
        self.expect_body = expect_body
        self.head = head
        self.buf = bytearray()
        self.scan = 0
        self.state = _LINE
        self.code = 0
        self.reason_text = ""
        self.framing = _CLOSE
        self.remaining = 0
        self.cstate = _C_SIZE
        self.body = bytearray()

    def on_connected(self) -> None:
        self.transport.write(self.request)  # type: ignore[union-attr]

    def on_data(self, data: bytes) -> None:
        room = CHECK_BUFFER - len(self.buf) - len(self.body)
        truncated = len(data) > room
        self.buf += data[:max(room, 0)]
        self._parse()
        if truncated and not self.finished:
            self._too_big()

    def _too_big(self) -> None:
        if self.state == _BODY:
            self._no_match()
        elif self.state == _LINE:
            self.finish("L7RSP", desc="Invalid HTTP status line")
        else:
            self.finish("L7RSP", code=self.code, desc="HTTP response head too large")

    def _parse(self) -> None:
        if self.state == _LINE:
            end = self.buf.find(b"\n", self.scan)
            if end < 0:
                self.scan = len(self.buf)
                return
            line = bytes(self.buf[:end]).rstrip(b"\r")
            del self.buf[:end + 1]
            self.scan = 0
            if not self._status_line(line) or self.finished:
                return
            self.state = _HEADERS
        if self.state == _HEADERS:
            end = self._head_end()
            if end < 0:
                return
            head = bytes(self.buf[:end])
            del self.buf[:end]
            self.scan = 0
            if not self._headers(head):
                return
            self.state = _BODY
        if self.state == _BODY:
            self._body()

    def _status_line(self, line: bytes) -> bool:
        parts = line.split(b" ", 2)
        version = parts[0]
        if (len(parts) < 2 or len(version) != 8 or not version.startswith(b"HTTP/")
                or version[6:7] != b"." or not version[5:6].isdigit() or not version[7:8].isdigit()
                or len(parts[1]) != 3 or not parts[1].isdigit()):
            self.finish("L7RSP", desc="Invalid HTTP status line")
            return False
        self.code = int(parts[1])
        self.reason_text = printable(parts[2] if len(parts) > 2 else b"")
        if not self.lo <= self.code <= self.hi:
            self.finish("L7STS", code=self.code, desc=self.reason_text)
            return False
        if self.expect_body is None:
            self.finish("L7OK", code=self.code, desc=self.reason_text)
            return False
        return True

    def _head_end(self) -> int:
        """Offset just past the blank line ending the head, or -1 (scan resumes)."""
        buf = self.buf
        if buf[:2] == b"\r\n":
            return 2
        if buf[:1] == b"\n":
            return 1
        i = buf.find(b"\n\r\n", max(self.scan - 2, 0))
        j = buf.find(b"\n\n", max(self.scan - 1, 0))
        ends = [k for k in ((i + 3) if i >= 0 else -1, (j + 2) if j >= 0 else -1) if k >= 0]
        if not ends:
            self.scan = len(buf)
            return -1
        return min(ends)

    def _headers(self, head: bytes) -> bool:
        length: int | None = None
        chunked = False
        for raw in head.split(b"\n"):
            name, sep, value = raw.rstrip(b"\r").partition(b":")
            if not sep:
                continue
            name = name.strip().lower()
            value = value.strip()
            if name == b"content-length":
                if not value.isdigit() or len(value) > 18:
                    self.finish("L7RSP", code=self.code, desc="Invalid HTTP Content-Length")
                    return False
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = value.lower().split(b",")[-1].strip() == b"chunked"
        if self.head or self.code < 200 or self.code in (204, 304):
            self.framing = _NONE
        elif chunked:
            self.framing = _CHUNKED
        elif length is not None:
            self.framing = _LENGTH
            self.remaining = length
        else:
            self.framing = _CLOSE
        return True

    def _body(self) -> None:
        if self.framing == _NONE:
            self._no_match()
            return
        if self.framing == _CLOSE:
            self._add(bytes(self.buf))
            self.buf.clear()
        elif self.framing == _LENGTH:
            take = bytes(self.buf[:self.remaining])
            del self.buf[:len(take)]
            self.remaining -= len(take)
            self._add(take)
            if not self.finished and self.remaining == 0:
                self._no_match()
        else:
            self._dechunk()

    def _dechunk(self) -> None:
        buf = self.buf
        while buf and not self.finished:
            if self.cstate == _C_SIZE:
                end = buf.find(b"\n")
                if end < 0:
                    if len(buf) > 1024:
                        self.finish("L7RSP", code=self.code, desc="Invalid HTTP chunk size")
                    return
                digits = bytes(buf[:end]).rstrip(b"\r").split(b";", 1)[0].strip()
                del buf[:end + 1]
                try:
                    if not digits or len(digits) > 16:
                        raise ValueError(digits)
                    size = int(digits, 16)
                except ValueError:
                    self.finish("L7RSP", code=self.code, desc="Invalid HTTP chunk size")
                    return
                if size == 0:
                    self.cstate = _C_END
                    self._no_match()
                    return
                self.remaining = size
                self.cstate = _C_DATA
            elif self.cstate == _C_DATA:
                take = bytes(buf[:self.remaining])
                del buf[:len(take)]
                self.remaining -= len(take)
                self._add(take)
                if self.remaining == 0:
                    self.cstate = _C_CRLF
            elif self.cstate == _C_CRLF:
                if buf[:1] == b"\r":
                    if len(buf) < 2:
                        return
                    del buf[:1]
                if buf[:1] != b"\n":
                    self.finish("L7RSP", code=self.code, desc="Invalid HTTP chunk")
                    return
                del buf[:1]
                self.cstate = _C_SIZE
            else:
                return

    def _add(self, data: bytes) -> None:
        assert self.expect_body is not None
        start = max(len(self.body) - len(self.expect_body) + 1, 0)
        self.body += data
        if self.body.find(self.expect_body, start) >= 0:
            self.finish("L7OK", code=self.code, desc=self.reason_text)

    def _no_match(self) -> None:
        assert self.expect_body is not None
        self.finish("L7RSP", code=self.code,
                    desc="HTTP content check did not match '%s'" % self.expect_body.decode("utf-8", "replace"))

    def on_lost(self, reason: Failure) -> None:
        if self.state == _BODY and self.framing == _CLOSE and isinstance(reason.value, ConnectionDone):
            self._no_match()
        elif self.state == _LINE and self.received_bytes == 0:
            self.finish("L7RSP", desc="empty response" if isinstance(reason.value, ConnectionDone) else _error_text(reason))
        elif isinstance(reason.value, ConnectionDone):
            self.finish("L7RSP", code=self.code or None, desc="incomplete HTTP response")
        else:
            self.finish("L7RSP", code=self.code or None, desc=_error_text(reason))


class _MySQLBase(_Check):
    """Packets in, one step per packet; protocol errors become L7RSP."""

    def __init__(self, clock: Any, timeout: float) -> None:
        super().__init__(clock, timeout, False)
        self.reader = PacketReader()
        self.stage = "greeting"
        self.version = ""

    def on_data(self, data: bytes) -> None:
        try:
            for seq, payload in self.reader.feed(data):
                if not payload:
                    raise ProtocolError("empty MySQL packet")
                self.on_packet(seq, payload)
                if self.finished:
                    return
        except ProtocolError as e:
            self.finish("L7RSP", desc=str(e))

    def on_packet(self, seq: int, payload: bytes) -> None:
        raise NotImplementedError

    def error(self, payload: bytes) -> None:
        code, msg = parse_error(payload)
        self.finish("L7STS", code=code, desc=msg)

    def quit(self, status: str, code: int | None, desc: str) -> None:
        """Logged in: say goodbye (COM_QUIT) and report, closing once the goodbye is sent."""
        self.transport.write(packet(0, COM_QUIT))  # type: ignore[union-attr]
        self.finish(status, code=code, desc=desc, graceful=True)

    def on_lost(self, reason: Failure) -> None:
        if self.received_bytes == 0 and isinstance(reason.value, ConnectionDone):
            text = "empty response"
        elif isinstance(reason.value, ConnectionDone):
            text = "connection closed during the MySQL %s" % self.stage
        else:
            text = _error_text(reason)
        self.finish("L7RSP", desc=text)


class _MySQLCheck(_MySQLBase):
    """HAProxy's mysql-check: greeting; with a user, a password-less login, OK, COM_QUIT."""

    def __init__(self, clock: Any, timeout: float, user: str | None) -> None:
        super().__init__(clock, timeout)
        self.user = user

    def on_packet(self, seq: int, payload: bytes) -> None:
        if self.stage == "greeting":
            if payload[0] == 0xFF:
                self.error(payload)
                return
            greeting = parse_greeting(payload)
            self.version = greeting.version
            if self.user is None:
                self.finish("L7OK", desc=self.version, graceful=True)
                return
            self.transport.write(packet(seq + 1, login_packet(self.user, b"", None)))  # type: ignore[union-attr]
            self.stage = "login"
        elif self.stage == "login":
            if payload[0] == 0x00:
                self.quit("L7OK", None, self.version)
            elif payload[0] == 0xFF:
                self.error(payload)
            else:
                raise ProtocolError("unexpected answer to the login (0x%02x)" % payload[0])


def mysql_probe(user: str | None) -> Probe:
    def probe(reactor: Any, target: Target) -> defer.Deferred[CheckResult]:
        return _launch(reactor, target, _MySQLCheck(reactor, target.timeout, user))

    return probe


# -- galera -----------------------------------------------------------------------------

GALERA_QUERY = b"SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_local_state','wsrep_ready')"
GALERA_STATES = {1: "Joining", 2: "Donor/Desynced", 3: "Joined", 4: "Synced"}
SYNCED = 4
DONOR = 2


class _GaleraCheck(_MySQLBase):
    """Logs in, reads the node's wsrep state, judges it as clustercheck does."""

    def __init__(self, clock: Any, timeout: float, user: str, password: str, allow_donor: bool) -> None:
        super().__init__(clock, timeout)
        self.user = user
        self.password = password.encode("utf-8")
        self.allow_donor = allow_donor
        self.columns = 0
        self.status: dict[bytes, bytes | None] = {}

    def on_packet(self, seq: int, payload: bytes) -> None:
        first = payload[0]
        if self.stage == "greeting":
            if first == 0xFF:
                self.error(payload)
                return
            greeting = parse_greeting(payload)
            self.version = greeting.version
            plugin = NATIVE_PASSWORD if greeting.capabilities & CLIENT_PLUGIN_AUTH else None
            auth = native_password(self.password, greeting.scramble)
            self.transport.write(packet(seq + 1, login_packet(self.user, auth, plugin)))  # type: ignore[union-attr]
            self.stage = "login"
        elif self.stage == "login":
            if first == 0x00:
                self.transport.write(packet(0, COM_QUERY + GALERA_QUERY))  # type: ignore[union-attr]
                self.stage = "query"
            elif first == 0xFF:
                self.error(payload)
            elif first == 0xFE and len(payload) > 1:
                nul = payload.find(b"\0", 1)
                if nul < 0:
                    raise ProtocolError("invalid authentication switch request")
                plugin = payload[1:nul].decode("ascii", "replace")
                if plugin != NATIVE_PASSWORD:
                    raise ProtocolError("unsupported authentication plugin %s" % printable(plugin.encode(), 64))
                scramble = strip_nul(payload[nul + 1:])
                self.transport.write(packet(seq + 1, native_password(self.password, scramble)))  # type: ignore[union-attr]
            else:
                raise ProtocolError("unsupported authentication exchange (0x%02x)" % first)
        elif self.stage == "query":
            if first == 0xFF:
                code, msg = parse_error(payload)
                self.quit("L7STS", code, msg)
                return
            if first == 0x00:
                raise ProtocolError("the status query returned no result set")
            count, _ = lenenc(payload, 0)
            if not count:
                raise ProtocolError("the status query returned no columns")
            self.columns = count
            self.stage = "columns"
        elif self.stage == "columns":
            if self.columns > 0:
                self.columns -= 1
            elif is_eof(payload):
                self.stage = "rows"
            else:
                self.stage = "rows"      # a server that skips the EOF after the columns
                self.row(payload)
        elif self.stage == "rows":
            if first == 0xFF:
                code, msg = parse_error(payload)
                self.quit("L7STS", code, msg)
            elif is_eof(payload):
                self.judge()
            else:
                self.row(payload)

    def row(self, payload: bytes) -> None:
        values = parse_row(payload)
        if len(values) < 2 or values[0] is None:
            raise ProtocolError("unexpected row in the status result")
        if len(self.status) < 16:
            self.status[values[0].lower()] = values[1]

    def judge(self) -> None:
        raw_state = self.status.get(b"wsrep_local_state")
        ready = self.status.get(b"wsrep_ready")
        if raw_state is None or ready is None:
            self.quit("L7RSP", None, "no wsrep status: not a Galera node")
            return
        try:
            state = int(raw_state)
        except ValueError:
            self.quit("L7RSP", None, "invalid wsrep_local_state %s" % printable(raw_state, 32))
            return
        name = GALERA_STATES.get(state, "state %d" % state)
        if ready.upper() != b"ON":
            self.quit("L7STS", state, "wsrep_ready is %s" % printable(ready, 16))
        elif state == SYNCED:
            self.quit("L7OK", state, name)
        elif state == DONOR and self.allow_donor:
            self.quit("L7OK", state, name + " (allow_donor)")
        else:
            self.quit("L7STS", state, name)


def galera_probe(user: str, password: str, allow_donor: bool) -> Probe:
    def probe(reactor: Any, target: Target) -> defer.Deferred[CheckResult]:
        return _launch(reactor, target, _GaleraCheck(reactor, target.timeout, user, password, allow_donor))

    return probe
