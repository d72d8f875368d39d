"""The access log: one line per HTTP request or TCP connection.

HAProxy's httplog/tcplog layouts, or one JSON object per line. Lines go to
the daemon's log (``access = "-"``), to a file, or nowhere (``"off"``, and
then callers skip building them: check ``enabled`` first).
"""
from __future__ import annotations

import json
import time
from typing import IO, Any

from lbd.logsetup import Logger

from lbd.config import LogConfig

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def haproxy_date(ts: float) -> str:
    """``06/Feb/2009:12:12:51.443`` in local time, as HAProxy logs it."""
    t = time.localtime(ts)
    ms = int((ts - int(ts)) * 1000)
    return "%02d/%s/%04d:%02d:%02d:%02d.%03d" % (
        t.tm_mday, _MONTHS[t.tm_mon - 1], t.tm_year, t.tm_hour, t.tm_min, t.tm_sec, ms)


def _ms(value: float | None) -> int:
    return -1 if value is None else int(value * 1000)


class AccessLog:
    """Writes access lines; ``enabled`` is False when ``access = "off"``."""

    log = Logger(namespace="lbd.access")

    def __init__(self, cfg: LogConfig) -> None:
        self.enabled = cfg.access != "off"
        self.json = cfg.format == "json"
        self._file: IO[str] | None = None
        if self.enabled and cfg.access != "-":
            self._file = open(cfg.access, "a", buffering=1, encoding="utf-8")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _emit(self, line: str) -> None:
        if self._file is not None:
            self._file.write(line + "\n")
        else:
            self.log.info("{line}", line=line)

    def tcp(self, *, client: str, client_port: int, start: float, frontend: str, backend: str,
            server: str, tw: float | None, tc: float | None, tt: float, bytes_read: int,
            termination: str, actconn: int, feconn: int, beconn: int, srvconn: int,
            retries: int, srv_queue: int, be_queue: int) -> None:
        """HAProxy tcplog: ``%ci:%cp [%t] %ft %b/%s %Tw/%Tc/%Tt %B %ts %ac/%fc/%bc/%sc/%rc %sq/%bq``."""
        if self.json:
            self._emit(json.dumps({
                "client_ip": client, "client_port": client_port, "date": haproxy_date(start),
                "timestamp": start, "frontend": frontend, "backend": backend, "server": server,
                "Tw": _ms(tw), "Tc": _ms(tc), "Tt": _ms(tt), "bytes_read": bytes_read,
                "termination_state": termination, "actconn": actconn, "feconn": feconn,
                "beconn": beconn, "srvconn": srvconn, "retries": retries,
                "srv_queue": srv_queue, "backend_queue": be_queue,
            }, separators=(",", ":")))
            return
        self._emit("%s:%d [%s] %s %s/%s %d/%d/%d %d %s %d/%d/%d/%d/%d %d/%d" % (
            client, client_port, haproxy_date(start), frontend, backend, server,
            _ms(tw), _ms(tc), _ms(tt), bytes_read, termination,
            actconn, feconn, beconn, srvconn, retries, srv_queue, be_queue))

    def http(self, *, client: str, client_port: int, start: float, frontend: str, backend: str,
             server: str, tq: float | None, tw: float | None, tc: float | None, tr: float | None,
             ta: float, status: int, bytes_read: int, termination: str, actconn: int,
             feconn: int, beconn: int, srvconn: int, retries: int, srv_queue: int,
             be_queue: int, request_line: str, extra: dict[str, Any] | None = None) -> None:
        """HAProxy httplog: ``... %Tq/%Tw/%Tc/%Tr/%Ta %ST %B - - %tsc %ac/%fc/%bc/%sc/%rc %sq/%bq "%r"``."""
        if self.json:
            record = {
                "client_ip": client, "client_port": client_port, "date": haproxy_date(start),
                "timestamp": start, "frontend": frontend, "backend": backend, "server": server,
                "Tq": _ms(tq), "Tw": _ms(tw), "Tc": _ms(tc), "Tr": _ms(tr), "Ta": _ms(ta),
                "status": status, "bytes_read": bytes_read, "termination_state": termination,
                "actconn": actconn, "feconn": feconn, "beconn": beconn, "srvconn": srvconn,
                "retries": retries, "srv_queue": srv_queue, "backend_queue": be_queue,
                "request": request_line,
            }
            if extra:
                record.update(extra)
            self._emit(json.dumps(record, separators=(",", ":")))
            return
        self._emit('%s:%d [%s] %s %s/%s %d/%d/%d/%d/%d %d %d - - %s %d/%d/%d/%d/%d %d/%d "%s"' % (
            client, client_port, haproxy_date(start), frontend, backend, server,
            _ms(tq), _ms(tw), _ms(tc), _ms(tr), _ms(ta), status, bytes_read, termination,
            actconn, feconn, beconn, srvconn, retries, srv_queue, be_queue, request_line))
