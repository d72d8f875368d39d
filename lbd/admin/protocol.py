"""The admin socket's wire protocol: lines, ``;``, levels, prompt mode, timeouts.

HAProxy's framing: each command's answer ends with an empty line; without
``prompt`` the connection closes once the commands received are answered,
with it the session stays open and prints ``> `` after each answer. Lines
are bounded (``MAX_LINE``): a longer one is answered with an error and
discarded up to its end, so one client cannot make lbd buffer megabytes.
A client silent for ``timeout`` seconds (10, HAProxy's default; ``set
timeout cli``) is disconnected.
"""
from __future__ import annotations

import os
import socket
import stat
from typing import TYPE_CHECKING, Any

from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from lbd.admin import commands
from lbd.logsetup import Logger

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall

    from lbd.service import LBService

MAX_LINE = 16384        # bytes in one command line (HAProxy's default buffer size)
PROMPT = b"> "


@implementer(IHalfCloseableProtocol)
class AdminProtocol(Protocol):
    """One admin socket connection."""

    log = Logger()

    def __init__(self, service: LBService, level: str, clock: Any) -> None:
        self.service = service
        self.clock = clock
        self.session = commands.Session(level)
        self._buf = bytearray()
        self._seen = 0                      # bytes of _buf already searched for a newline
        self._discarding = False            # inside an over-long line: drop up to its newline
        self._timer: IDelayedCall | None = None
        self._done = False

    # -- connection ------------------------------------------------------

    def connectionMade(self) -> None:
        self._timer = self.clock.callLater(self.session.timeout, self._timed_out)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._done = True
        self._cancel_timer()

    def readConnectionLost(self) -> None:
        """The client sent everything (``echo cmd | socat``): run an unterminated last line, then close."""
        if self._done:
            return
        if self._buf and not self._discarding:
            line = bytes(self._buf)
            self._buf.clear()
            self._line(line)
        self._finish()

    def writeConnectionLost(self) -> None:
        self._finish()

    # -- input -----------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._done:
            return
        buf = self._buf
        buf += data
        answered = False
        while not self._done:
            end = buf.find(b"\n", self._seen)
            if end < 0:
                if self._discarding:
                    buf.clear()
                    self._seen = 0
                elif len(buf) > MAX_LINE:
                    self._too_long()
                else:
                    self._seen = len(buf)
                break
            line = bytes(buf[:end])
            del buf[: end + 1]
            self._seen = 0
            if self._discarding:
                self._discarding = False    # the end of the over-long line: it was answered already
                answered = True
                if self.session.prompt:
                    self._write(PROMPT)
                continue
            if len(line) > MAX_LINE:
                self._too_long()
                self._discarding = False
                answered = True
                continue
            self._line(line)
            answered = True
        if answered and not self._done and not self.session.prompt and not buf and not self._discarding:
            self._finish()
        else:
            self._reset_timer()             # after the commands: "set timeout cli" applies at once

    def _too_long(self) -> None:
        reply = commands.Reply("Command line too long (the limit is %d bytes)." % MAX_LINE, commands.ERR)
        self._write(commands.render(reply, self.session.severity_output).encode())
        self._buf.clear()
        self._seen = 0
        self._discarding = True

    def _line(self, raw: bytes) -> None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        text = raw.decode("utf-8", "replace")
        session = self.session
        try:
            replies = commands.execute(self.service, text, session)
        except Exception:
            self.log.failure("admin command {line!r} failed", line=text)
            replies = [commands.Reply("Internal error, see lbd's log.", commands.ERR)]
        if session.closing:
            replies = replies[:-1]          # "quit" prints nothing
        out = [commands.render(reply, session.severity_output) for reply in replies]
        if out:
            self._write("".join(out).encode("utf-8"))
        if session.closing:
            self._finish()
            return
        if session.prompt:
            self._write(PROMPT)

    # -- output and closing ---------------------------------------------

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self._done:
            self.transport.write(data)

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        self._cancel_timer()
        if self.transport is not None:
            self.transport.loseConnection()

    def _timed_out(self) -> None:
        self._timer = None
        self._finish()

    def _reset_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.reset(self.session.timeout)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


class AdminFactory(Factory):
    """Builds a protocol per admin connection, at the socket's level."""

    noisy = False

    def __init__(self, service: LBService, level: str) -> None:
        self.service = service
        self.level = level

    def buildProtocol(self, addr: Any) -> AdminProtocol:
        proto = AdminProtocol(self.service, self.level, self.service.reactor)
        proto.factory = self
        return proto


def _clear_stale_socket(path: str) -> bool:
    """Remove a socket file left by a crashed lbd; fail if a live one answers there.

    Returns True when a stale file was removed.
    """
    from lbd.service import StartupError

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as e:
        raise StartupError("admin.socket: cannot use %s: %s" % (path, e.strerror or e))
    if not stat.S_ISSOCK(st.st_mode):
        raise StartupError("admin.socket: %s exists and is not a socket" % (path,))
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        pass                                # nobody listens: a leftover from a crash
    except OSError as e:
        raise StartupError("admin.socket: cannot check whether %s is in use: %s" % (path, e.strerror or e))
    else:
        raise StartupError("admin.socket: %s is in use: another lbd is running and answering on it" % (path,))
    finally:
        probe.close()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise StartupError("admin.socket: cannot remove the stale socket %s: %s" % (path, e.strerror or e))
    return True


_log = Logger()


def listen_admin(service: LBService) -> Any:
    """Listen on ``admin.socket`` with its mode and level; returns the listening port.

    Raises ``StartupError`` when the socket cannot be used, including when a
    running lbd already answers on it.
    """
    from lbd.service import StartupError

    cfg = service.config.admin
    path = cfg.socket
    assert path is not None
    if _clear_stale_socket(path):
        _log.info("admin socket {path}: removed a stale socket file", path=path)
    factory = AdminFactory(service, cfg.level)
    # Bind with no access for others, then chmod to the configured mode: no window where it is wider.
    old_umask = os.umask(0o177)
    try:
        port = service.reactor.listenUNIX(path, factory, mode=cfg.mode, wantPID=False)
    except CannotListenError as e:
        reason = e.socketError
        text = getattr(reason, "strerror", None) or str(reason)
        raise StartupError("admin.socket: cannot listen on %s: %s" % (path, text))
    finally:
        os.umask(old_umask)
    _log.info("admin socket listening on {path} (level {cli_level})", path=path, cli_level=cfg.level)
    return port
