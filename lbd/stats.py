"""HAProxy 2.6's ``show stat`` model over the live pool.

One place turns frontends, backends and servers into HAProxy's stat rows, so
``show stat`` (CSV and JSON), the status page and scripts written for
HAProxy all read the same numbers. Rows are built at read time from the
pool's plain int counters; nothing here runs on the proxy's hot path.

A row is a dict holding only the fields that apply to its kind of object,
as HAProxy leaves the others empty: ``stat_csv`` writes a missing field as
an empty column and ``stat_json`` skips it.

Health details come from ``srv.checker`` when it offers them (read with
``getattr``, so any checker works):

- ``health``: HAProxy's health counter, 0 .. rise+fall-1 (UP while it is at
  least ``rise``); below the top while UP gives ``UP 2/3``, above 0 while
  DOWN gives ``DOWN 1/2``.
- ``in_progress``: a check is running now (``* L7OK``, as HAProxy).
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Union

from lbd.pool import CHECK_STATUSES, DRAIN, MAINT, Backend, Frontend, Pool, Server

Row = dict[str, Union[str, int]]

# HAProxy 2.6's static stat fields, in order (include/haproxy/stats-t.h,
# enum stat_field; doc/management.txt section 9.1). Tools read columns by
# position, so this order is part of the interface.
STAT_FIELDS: tuple[str, ...] = (
    "pxname", "svname", "qcur", "qmax", "scur", "smax", "slim", "stot", "bin", "bout",
    "dreq", "dresp", "ereq", "econ", "eresp", "wretr", "wredis", "status", "weight", "act",
    "bck", "chkfail", "chkdown", "lastchg", "downtime", "qlimit", "pid", "iid", "sid", "throttle",
    "lbtot", "tracked", "type", "rate", "rate_lim", "rate_max", "check_status", "check_code",
    "check_duration", "hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other",
    "hanafail", "req_rate", "req_rate_max", "req_tot", "cli_abrt", "srv_abrt", "comp_in",
    "comp_out", "comp_byp", "comp_rsp", "lastsess", "last_chk", "last_agt", "qtime", "ctime",
    "rtime", "ttime", "agent_status", "agent_code", "agent_duration", "check_desc", "agent_desc",
    "check_rise", "check_fall", "check_health", "agent_rise", "agent_fall", "agent_health",
    "addr", "cookie", "mode", "algo", "conn_rate", "conn_rate_max", "conn_tot", "intercepted",
    "dcon", "dses", "wrew", "connect", "reuse", "cache_lookups", "cache_hits", "srv_icur",
    "src_ilim", "qtime_max", "ctime_max", "rtime_max", "ttime_max", "eint", "idle_conn_cur",
    "safe_conn_cur", "used_conn_cur", "need_conn_est", "uweight", "agg_server_status", "agg_server_check_status",
    "agg_check_status",
)

# The ``type`` column.
TYPE_FRONTEND = 0
TYPE_BACKEND = 1
TYPE_SERVER = 2

# HAProxy's check statuses and their descriptions live in the pool, shared with the probes.

_NOT_CHECKED = {"INI": "Initializing", "UNK": "Unknown"}
# Statuses that carry a layer 5-7 code (HAProxy: status >= HCHK_STATUS_L57DATA).
_WITH_CODE = ("L7OK", "L7OKC", "L7STS")


# -- status texts --------------------------------------------------------------


def check_enabled(srv: Server) -> bool:
    """The server is health checked now (configured, and not ``disable health``)."""
    return bool(srv.checked and not srv.health_disabled)


def _rise_fall(srv: Server) -> tuple[int, int]:
    health = srv.backend.cfg.health
    if health is None:
        return 0, 0
    return health.rise, health.fall


def _health(srv: Server) -> int | None:
    value = getattr(srv.checker, "health", None) if srv.checker is not None else None
    return value if isinstance(value, int) else None


def server_status(srv: Server) -> str:
    """HAProxy's ``status`` text: MAINT, DRAIN, UP, ``UP 1/3``, DOWN, ``DOWN 1/2``, ``no check``."""
    if srv.maint:
        return MAINT
    checked = check_enabled(srv)
    rise, fall = _rise_fall(srv)
    health = _health(srv) if checked else None
    if srv.up:
        going_down = health is not None and health < rise + fall - 1
        if srv.drain:
            return "DRAIN %d/%d" % (health - rise + 1, fall) if going_down and health is not None else DRAIN
        if going_down and health is not None:
            return "UP %d/%d" % (health - rise + 1, fall)
        return "UP" if checked else "no check"
    if health is not None and health > 0:
        return "DOWN %d/%d" % (health, rise)
    return "DOWN"


def check_status(srv: Server) -> str | None:
    """The ``check_status`` column (``L7OK``, ``* L4CON`` while a check runs), None unchecked."""
    if not check_enabled(srv):
        return None
    status = srv.check_status or "INI"
    if srv.checker is not None and getattr(srv.checker, "in_progress", False) is True:
        return "* " + status
    return status


def frontend_status(fe: Frontend, pool: Pool) -> str:
    """OPEN, or STOP once lbd is stopping or a reload removed the frontend (as HAProxy)."""
    return "STOP" if fe.removed or pool.stopping else "OPEN"


def backend_status(be: Backend) -> str:
    """UP while some server may take traffic (or there are no servers, as HAProxy)."""
    return "UP" if be.available or not be.servers else "DOWN"


def _age(now: float, then: float) -> int:
    return max(0, int(now - then))


def _ms_avg(hist: Any) -> int:
    return int(hist.sum * 1000 / hist.count) if hist.count else 0


# -- rows ------------------------------------------------------------------------


def frontend_row(fe: Frontend, pool: Pool, now: float) -> Row:
    http = fe.cfg.mode == "http"
    row: Row = {
        "pxname": fe.name, "svname": "FRONTEND",
        "scur": fe.cur_sess, "smax": fe.max_sess, "slim": fe.maxconn, "stot": fe.tot_sess,
        "bin": fe.bytes_in, "bout": fe.bytes_out, "dreq": fe.dreq, "dresp": fe.dresp, "ereq": fe.ereq,
        "status": frontend_status(fe, pool), "pid": 1, "iid": fe.iid, "sid": 0, "type": TYPE_FRONTEND,
        "rate": fe.rate, "rate_lim": 0, "rate_max": fe.rate_max,
        "req_rate": fe.req_rate, "req_rate_max": fe.req_rate_max, "req_tot": fe.req_tot,
        "comp_in": fe.comp_in, "comp_out": 0, "comp_byp": 0, "comp_rsp": 0,
        "mode": fe.cfg.mode,
        "conn_rate": fe.rate, "conn_rate_max": fe.rate_max, "conn_tot": fe.tot_sess,
        "dcon": 0, "dses": 0, "wrew": 0, "eint": 0,
    }
    if http:
        _put_hrsp(row, fe.hrsp)
        row.update(intercepted=0, cache_lookups=0, cache_hits=0)
    return row


def server_row(srv: Server, now: float) -> Row:
    be = srv.backend
    http = be.cfg.mode == "http"
    checked = check_enabled(srv)
    row: Row = {
        "pxname": be.name, "svname": srv.name,
        "qcur": len(srv.queue), "qmax": srv.qmax, "scur": srv.cur_sess, "smax": srv.max_sess,
        "stot": srv.tot_sess, "bin": srv.bytes_in, "bout": srv.bytes_out, "dresp": srv.dresp,
        "econ": srv.econ, "eresp": srv.eresp, "wretr": srv.wretr, "wredis": srv.wredis,
        "status": server_status(srv), "weight": srv.eweight,
        "act": 0 if srv.cfg.backup else 1, "bck": 1 if srv.cfg.backup else 0,
        "lastchg": _age(now, srv.last_change), "pid": 1, "iid": be.iid, "sid": srv.sid,
        "lbtot": srv.lbtot, "type": TYPE_SERVER, "rate": srv.rate, "rate_max": srv.rate_max,
        "cli_abrt": srv.cli_abrt, "srv_abrt": srv.srv_abrt,
        "addr": srv.address, "mode": be.cfg.mode,
        "wrew": 0, "srv_icur": len(srv.idle), "eint": 0,
        "idle_conn_cur": len(srv.idle), "safe_conn_cur": 0, "used_conn_cur": srv.cur_sess,
        "uweight": srv.uweight,
    }
    if srv.maxconn:
        row["slim"] = srv.maxconn
    if srv.slowstart_until > now and srv.up and not srv.drain and srv.uweight:
        row["throttle"] = srv.eweight * 100 // srv.uweight
    if checked:
        rise, fall = _rise_fall(srv)
        status = srv.check_status or "INI"
        row["chkfail"] = srv.chkfail
        row["chkdown"] = srv.chkdown
        row["downtime"] = int(srv.total_downtime(now))
        row["check_status"] = check_status(srv) or status
        if status in _WITH_CODE and srv.check_code is not None:
            row["check_code"] = srv.check_code
        if status in CHECK_STATUSES and srv.check_duration is not None:
            row["check_duration"] = int(srv.check_duration * 1000)
        row["check_desc"] = CHECK_STATUSES.get(status) or _NOT_CHECKED.get(status, "Unknown")
        row["last_chk"] = srv.check_desc
        row["check_rise"] = rise
        row["check_fall"] = fall
        health = _health(srv)
        row["check_health"] = health if health is not None else (rise + fall - 1 if srv.up else 0)
    if http:
        row["req_tot"] = srv.req_tot
        _put_hrsp(row, srv.hrsp)
    return row


def backend_row(be: Backend, now: float) -> Row:
    http = be.cfg.mode == "http"
    serving = be.active if be.active else be.backups
    row: Row = {
        "pxname": be.name, "svname": "BACKEND",
        "qcur": len(be.queue), "qmax": be.qmax, "scur": be.cur_sess, "smax": be.max_sess,
        "stot": be.tot_sess, "bin": be.bytes_in, "bout": be.bytes_out, "dreq": be.dreq,
        "dresp": be.dresp, "econ": be.econ, "eresp": be.eresp, "wretr": be.wretr, "wredis": be.wredis,
        "status": backend_status(be), "weight": sum(s.eweight for s in serving),
        "act": len(be.active), "bck": len(be.backups),
        "chkdown": sum(s.chkdown for s in be.servers.values()),
        "lastchg": _age(now, be.last_change), "pid": 1, "iid": be.iid, "sid": 0,
        "lbtot": be.lbtot, "type": TYPE_BACKEND, "rate": be.rate, "rate_max": be.rate_max,
        "cli_abrt": be.cli_abrt, "srv_abrt": be.srv_abrt,
        "comp_in": be.comp_in, "comp_out": 0, "comp_byp": 0, "comp_rsp": 0,
        "qtime": 0, "ctime": _ms_avg(be.connect_time), "rtime": _ms_avg(be.response_time),
        "ttime": _ms_avg(be.total_time),
        "mode": be.cfg.mode, "algo": be.cfg.balance,
        "wrew": 0, "eint": 0, "uweight": sum(s.uweight for s in serving),
        "agg_server_status": 0, "agg_server_check_status": 0, "agg_check_status": 0,
    }
    if be.servers:
        row["downtime"] = int(be.total_downtime(now))
    if http:
        row["req_tot"] = be.req_tot
        _put_hrsp(row, be.hrsp)
        row.update(cache_lookups=0, cache_hits=0)
    return row


def _put_hrsp(row: Row, hrsp: list[int]) -> None:
    row["hrsp_1xx"], row["hrsp_2xx"], row["hrsp_3xx"], row["hrsp_4xx"], row["hrsp_5xx"], row["hrsp_other"] = hrsp


def stat_rows(pool: Pool, now: float | None = None) -> list[Row]:
    """Every FRONTEND row, then per backend its server rows and its BACKEND row.

    ``now`` (seconds, the pool's clock by default) dates ``lastchg`` and ``downtime``.
    """
    if now is None:
        now = pool.clock.seconds()
    rows = [frontend_row(fe, pool, now) for fe in pool.frontends.values()]
    for be in pool.backends.values():
        rows.extend(server_row(srv, now) for srv in be.servers.values())
        rows.append(backend_row(be, now))
    return rows


# -- CSV ---------------------------------------------------------------------------

# HAProxy ends its static fields with a "-" column, before its stats modules' ones.
CSV_HEADER = "# " + "".join(name + "," for name in STAT_FIELDS) + "-,\n"


def _csv_value(value: str | int | None) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    if any(c in value for c in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def csv_line(row: Row) -> str:
    get = row.get
    return "".join(_csv_value(get(name)) + "," for name in STAT_FIELDS) + "-,\n"


def stat_csv(source: Pool | Iterable[Row], now: float | None = None) -> str:
    """HAProxy's ``show stat`` CSV: the ``# pxname,svname,...`` header, then a line per row.

    ``source`` is the pool (rows taken at ``now``) or rows already selected.
    """
    rows = stat_rows(source, now) if isinstance(source, Pool) else source
    return CSV_HEADER + "".join(csv_line(r) for r in rows)


# -- JSON ----------------------------------------------------------------------------

# Per field: origin, nature, scope and value type, as HAProxy tags them in
# ``show stat json`` (its mkf_* calls). A few differ by object type below.
_K, _C, _M, _S = "Key", "Config", "Metric", "Status"
_TAGS: dict[str, tuple[str, str, str, str]] = {
    "pxname": (_K, "Name", "Service", "str"), "svname": (_K, "Name", "Service", "str"),
    "qcur": (_M, "Gauge", "Process", "u32"), "qmax": (_M, "Max", "Process", "u32"),
    "scur": (_M, "Gauge", "Process", "u32"), "smax": (_M, "Max", "Process", "u32"),
    "slim": (_C, "Limit", "Process", "u32"), "status": (_S, "Gauge", "Process", "str"),
    "weight": (_M, "Avg", "Process", "u32"), "uweight": (_M, "Avg", "Process", "u32"),
    "act": (_S, "Gauge", "Process", "u32"), "bck": (_S, "Gauge", "Process", "u32"),
    "lastchg": (_M, "Age", "Process", "u32"), "downtime": (_M, "Counter", "Process", "u32"),
    "pid": (_K, "Gauge", "Process", "u32"), "iid": (_K, "Gauge", "Service", "u32"),
    "sid": (_K, "Gauge", "Service", "u32"), "throttle": (_M, "Avg", "Process", "u32"),
    "type": (_C, "Gauge", "Service", "u32"), "rate": (_M, "Rate", "Process", "u32"),
    "rate_lim": (_C, "Limit", "Process", "u32"), "rate_max": (_M, "Max", "Process", "u32"),
    "check_status": (_M, "Output", "Process", "str"), "check_code": (_M, "Output", "Process", "u32"),
    "check_duration": (_M, "Duration", "Process", "u64"), "check_desc": (_M, "Output", "Process", "str"),
    "last_chk": (_M, "Output", "Process", "str"), "check_rise": (_C, "Gauge", "Service", "u32"),
    "check_fall": (_C, "Gauge", "Service", "u32"), "check_health": (_C, "Gauge", "Service", "u32"),
    "req_rate": (_M, "Rate", "Process", "u32"), "req_rate_max": (_M, "Max", "Process", "u32"),
    "qtime": (_M, "Avg", "Process", "u32"), "ctime": (_M, "Avg", "Process", "u32"),
    "rtime": (_M, "Avg", "Process", "u32"), "ttime": (_M, "Avg", "Process", "u32"),
    "addr": (_C, "Gauge", "Service", "str"), "mode": (_C, "Gauge", "Service", "str"),
    "algo": (_C, "Gauge", "Service", "str"), "conn_rate": (_M, "Rate", "Process", "u32"),
    "conn_rate_max": (_M, "Max", "Process", "u32"), "srv_icur": (_M, "Gauge", "Process", "u32"),
    "idle_conn_cur": (_M, "Gauge", "Process", "u32"), "safe_conn_cur": (_M, "Gauge", "Process", "u32"),
    "used_conn_cur": (_M, "Gauge", "Process", "u32"), "agg_server_check_status": (_M, "Gauge", "Process", "u32"),
    "agg_server_status": (_M, "Gauge", "Process", "u32"), "agg_check_status": (_M, "Gauge", "Process", "u32"),
}
_COUNTER = (_M, "Counter", "Process", "u64")
_BACKEND_TAGS = {
    "rate": (_M, "Gauge", "Process", "u32"), "rate_max": (_M, "Gauge", "Process", "u32"),
    "act": (_M, "Gauge", "Process", "u32"), "bck": (_M, "Gauge", "Process", "u32"),
}
_OBJ_TYPES = {TYPE_FRONTEND: "Frontend", TYPE_BACKEND: "Backend", TYPE_SERVER: "Server"}


def _json_fields(row: Row) -> list[dict[str, Any]]:
    kind = row.get("type", TYPE_FRONTEND)
    obj = _OBJ_TYPES.get(int(kind), "Unknown")
    out = []
    for pos, name in enumerate(STAT_FIELDS):
        value = row.get(name)
        if value is None:
            continue
        tags = (_BACKEND_TAGS.get(name) if kind == TYPE_BACKEND else None) or _TAGS.get(name, _COUNTER)
        out.append({
            "objType": obj, "proxyId": row.get("iid", 0), "id": row.get("sid", 0),
            "field": {"pos": pos, "name": name}, "processNum": 1,
            "tags": {"origin": tags[0], "nature": tags[1], "scope": tags[2]},
            "value": {"type": "str" if isinstance(value, str) else tags[3], "value": value},
        })
    return out


def stat_json(source: Pool | Iterable[Row], now: float | None = None) -> str:
    """HAProxy's ``show stat json``: an array per row of typed, tagged fields (no newline)."""
    rows = stat_rows(source, now) if isinstance(source, Pool) else source
    return json.dumps([_json_fields(r) for r in rows], separators=(",", ":"))
