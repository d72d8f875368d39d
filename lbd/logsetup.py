"""lbd's loggers, filtered by ``[log] level``.

Every lbd module logs through ``lbd.logsetup.Logger``: a twisted Logger whose
events pass a level filter before reaching the global publisher (and so
twistd's log). Twisted's own events are not filtered.
"""
from __future__ import annotations

from typing import Any

from twisted.logger import FilteringLogObserver, LogLevel, LogLevelFilterPredicate, globalLogPublisher
from twisted.logger import Logger as _TwistedLogger

from lbd.config import LogConfig

_LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn, "error": LogLevel.error}

_predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
_filtered = FilteringLogObserver(globalLogPublisher, [_predicate])


def set_level(level: str) -> None:
    _predicate.defaultLogLevel = _LEVELS[level]


def setup_logging(cfg: LogConfig) -> None:
    set_level(cfg.level)


class Logger(_TwistedLogger):
    """A twisted Logger that goes through lbd's level filter."""

    def __init__(self, namespace: str | None = None, source: object | None = None,
                 observer: Any = None) -> None:
        if namespace is None:
            namespace = self._namespaceFromCallingContext()
        super().__init__(namespace, source, observer if observer is not None else _filtered)
