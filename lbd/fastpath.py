"""lbd's two shortcuts around Twisted's per-event costs (issue 9), switchable.

Profiles of lbd under keep-alive load showed two pieces of Twisted's own
per-event work costing more than HTTP parsing:

1. **Dispatch.** ``EPollReactor.doPoll`` wraps every socket event in
   ``log.callWithLogger`` (a context dict, a ``logPrefix()`` call and a
   context-tracker frame per event) only so that a log line emitted inside
   the handler is tagged with the connection's prefix. ``install`` replaces
   the reactor's ``doIteration`` (on that reactor *instance* only) by a poll
   loop that calls ``doRead``/``doWrite`` directly for plain read or write
   events and hands every other event (hang-up, error, both) to the
   reactor's own ``_doReadOrWrite``. An exception from a handler is still
   logged (inside ``callWithLogger``, so with the connection's prefix, as
   before) and disconnects that one selectable, as Twisted does.

2. **Writes.** ``FileDescriptor.write`` only queues: it calls ``startWriting``
   (an ``epoll_ctl`` modify), the next reactor turn dispatches ``doWrite``,
   which sends and calls ``stopWriting`` (another modify). ``adopt`` gives one
   plain TCP transport (``twisted.internet.tcp.Connection``, not TLS) a
   ``write`` that, when nothing is queued, sends at once; whatever the kernel
   does not take (a partial send, ``EAGAIN``), and every write while
   something is queued, closing or half-closing, or with a pull producer,
   goes through the class's own ``write``, so buffering, ``bufferSize``
   back-pressure on streaming producers, ``loseConnection`` flushing and
   error reporting (a failed send is queued and ``doWrite`` finds the error)
   stay Twisted's. lbd's own protocols call ``adopt`` in ``connectionMade``;
   nothing else on the reactor (admin, metrics) is touched.

``enabled(cfg)`` is the switch: ``global.fastpath`` (default true) unless the
environment says ``LBD_FASTPATH=0``. ``lbd.tap.makeService`` calls
``install`` when it is on; when it is off nothing is patched and ``adopt``
does nothing. Both shortcuts rely on private Twisted attributes
(``_selectables``, ``_poller``, ``_doReadOrWrite``, ``_disconnectSelectable``,
``dataBuffer``, ``_tempDataBuffer``, ``_writeDisconnecting``), identical in
Twisted 22.4 and 26.x; ``install`` checks they exist and otherwise declines.
"""
from __future__ import annotations

import errno
import os
import sys
import weakref
from types import MethodType
from typing import TYPE_CHECKING, Any

from twisted.internet import tcp
from twisted.python import log as _legacy_log
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from lbd.config import Config

__all__ = ["enabled", "install", "uninstall", "installed", "adopt"]

ENV = "LBD_FASTPATH"

_EPOLLIN = 1        # select.EPOLLIN
_EPOLLOUT = 4       # select.EPOLLOUT
_RETRY = frozenset((errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS, errno.EINTR))

# Reactors with the shortcuts installed (weakly: tests make and drop reactors).
_installed: weakref.WeakSet[Any] = weakref.WeakSet()

_REACTOR_ATTRS = ("_selectables", "_poller", "_doReadOrWrite", "_disconnectSelectable", "doIteration")
_CONN_ATTRS = ("dataBuffer", "_tempDataBuffer", "_writeDisconnecting", "_writeDisconnected",
               "disconnecting", "connected", "socket", "producer", "streamingProducer", "TLS")


def enabled(cfg: Config) -> bool:
    """The switch: ``global.fastpath``, overridden off by ``LBD_FASTPATH=0``."""
    if os.environ.get(ENV, "").strip().lower() in ("0", "false", "no", "off"):
        return False
    return bool(cfg.global_.fastpath)


def installed(reactor: Any) -> bool:
    return reactor in _installed


def install(reactor: Any) -> bool:
    """Install the dispatch shortcut on ``reactor`` and let ``adopt`` act on its transports.

    Returns False (changing nothing) for a reactor that is not an
    ``EPollReactor`` with the private attributes relied on.
    """
    if reactor in _installed:
        return True
    try:
        from twisted.internet.epollreactor import EPollReactor
    except ImportError:  # pragma: no cover - not Linux
        return False
    if not isinstance(reactor, EPollReactor):
        return False
    if not all(hasattr(reactor, a) for a in _REACTOR_ATTRS):  # pragma: no cover - a future Twisted
        return False
    reactor.doIteration = _make_do_poll(reactor)  # type: ignore[method-assign]
    _installed.add(reactor)
    return True


def uninstall(reactor: Any) -> None:
    """Undo ``install`` (adopted transports keep their fast ``write``, which stays correct)."""
    if reactor in _installed:
        _installed.discard(reactor)
        try:
            del reactor.doIteration          # back to the class's doPoll
        except AttributeError:  # pragma: no cover
            pass


def _make_do_poll(reactor: Any) -> Any:
    """``EPollReactor.doPoll`` without ``callWithLogger`` around each event."""
    poll = reactor._poller.poll
    selectables = reactor._selectables
    do_read_or_write = reactor._doReadOrWrite
    disconnect = reactor._disconnectSelectable
    call_with_logger = _legacy_log.callWithLogger
    log_err = _legacy_log.err

    def do_poll(timeout: float | None) -> None:
        if timeout is None:
            timeout = -1
        try:
            events = poll(timeout, len(selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        get = selectables.get
        for fd, event in events:
            selectable = get(fd)
            if selectable is None:
                continue
            if event == _EPOLLIN:
                in_read = True
            elif event == _EPOLLOUT:
                in_read = False
            else:
                # Hang-ups, errors, read and write at once: Twisted's own path.
                do_read_or_write(selectable, fd, event)
                continue
            try:
                if selectable.fileno() == -1:
                    why: Any = _no_filedesc()
                elif in_read:
                    why = selectable.doRead()
                else:
                    why = selectable.doWrite()
            except BaseException:
                why = sys.exc_info()[1]
                # Logged as Twisted logs it, with the connection's log prefix.
                call_with_logger(selectable, log_err, Failure())  # type: ignore[no-untyped-call]
            if why:
                disconnect(selectable, why, in_read)

    return do_poll


def _no_filedesc() -> Any:
    from twisted.internet.posixbase import _NO_FILEDESC
    return _NO_FILEDESC


def adopt(transport: Any) -> bool:
    """Give one of lbd's plain TCP transports the immediate ``write``, if installed on its reactor."""
    if not isinstance(transport, tcp.Connection) or getattr(transport, "TLS", False):
        return False
    if getattr(transport, "reactor", None) not in _installed:
        return False
    if not all(hasattr(transport, a) for a in _CONN_ATTRS):  # pragma: no cover - a future Twisted
        return False
    if "write" in transport.__dict__:
        return True
    transport.write = MethodType(_write, transport)  # type: ignore[method-assign]
    return True


def _write(self: Any, data: bytes) -> None:
    """``FileDescriptor.write``, sending at once when nothing is queued."""
    if (type(data) is not bytes or not data or self.dataBuffer or self._tempDataBuffer
            or not self.connected or self.disconnecting or self._writeDisconnecting
            or self._writeDisconnected or self.TLS
            or (self.producer is not None and not self.streamingProducer)):
        type(self).write(self, data)
        return
    try:
        sent = self.socket.send(data)
    except OSError as e:
        if e.errno not in _RETRY:
            # Queue it: doWrite meets the error and reports it as Twisted does.
            type(self).write(self, data)
            return
        sent = 0
    if sent < len(data):
        type(self).write(self, data[sent:])
