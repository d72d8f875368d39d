"""Prometheus metrics, the HTML status page and /healthz on ``metrics.bind``.

The collector keeps no counters of its own: at scrape time it reads the
pool's plain ints and histogram buckets into metric families, on the reactor
thread (never on a thread: the pool is not locked). Its ``collect()`` gives
prometheus-client families, so any registry and ``generate_latest`` can use
it; ``/metrics`` renders the same families with ``encode``, which writes the
same bytes as ``generate_latest`` (tests compare them) several times faster.
Names follow HAProxy's built-in exporter (addons/promex) with the configured
prefix, so ``prefix = "haproxy"`` serves HAProxy's dashboards.

The listener is exposed to whoever can reach it, so it is bounded like the
proxy: a request head over ``MAX_HEAD`` bytes gets 431, a body over
``MAX_BODY`` 413, a request not complete within ``REQUEST_DEADLINE`` 408, an
idle connection is closed after ``IDLE_TIMEOUT``.
"""
from __future__ import annotations

import html
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.http import Request as _HTTPRequest
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from lbd import __version__
from lbd import stats
from lbd.pool import BUCKETS, DOWN, DRAIN, MAINT, NOLB, UP, Backend, Frontend, Pool, Server

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall

    from lbd.service import LBService

MAX_HEAD = 8192             # bytes: request line plus headers
MAX_BODY = 1024             # bytes: GET needs none; anything larger is refused
REQUEST_DEADLINE = 10.0     # seconds from a request's first line to its last byte (slowloris)
IDLE_TIMEOUT = 30.0         # seconds of silence before an idle keep-alive connection closes
LINGER = 2.0                # seconds to drain a refused client's input before aborting
# What ``encode`` writes: the classic text format (prometheus-client 0.2x's
# CONTENT_TYPE_LATEST says version=1.0.0, for UTF-8 names lbd does not use).
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
STATUS_REFRESH = 5          # seconds between status page reloads in the browser

# State label values, in HAProxy's order (promex_srv_st, promex_back_st).
SERVER_STATES = (DOWN, UP, MAINT, DRAIN, NOLB)
PROXY_STATES = (DOWN, UP)
HTTP_CODES = ("1xx", "2xx", "3xx", "4xx", "5xx", "other")
# HAProxy's finished-check statuses (promex: every result >= CHK_RES_FAILED) but
# those lbd never produces (HANA: no health analysis; PROC*: no external checks).
CHECK_STATES = tuple(s for s in stats.CHECK_STATUSES if s != "HANA" and not s.startswith("PROC"))
_LE = [floatToGoString(b) for b in BUCKETS] + ["+Inf"]

G, C, H = "gauge", "counter", "histogram"
_Getter = Callable[[Any], float]

# (name after "<prefix>_frontend_", type, help, value): every frontend.
_FRONTEND: tuple[tuple[str, str, str, _Getter], ...] = (
    ("current_sessions", G, "Current number of active sessions.", attrgetter("cur_sess")),
    ("max_sessions", G, "Maximum observed number of active sessions.", attrgetter("max_sess")),
    ("limit_sessions", G, "Configured session limit.", attrgetter("maxconn")),
    ("sessions_total", C, "Total number of sessions.", attrgetter("tot_sess")),
    ("bytes_in_total", C, "Current total of incoming bytes.", attrgetter("bytes_in")),
    ("bytes_out_total", C, "Current total of outgoing bytes.", attrgetter("bytes_out")),
    ("requests_denied_total", C, "Total number of denied requests.", attrgetter("dreq")),
    ("responses_denied_total", C, "Total number of denied responses.", attrgetter("dresp")),
    ("request_errors_total", C, "Total number of request errors.", attrgetter("ereq")),
    ("max_session_rate", G, "Maximum observed number of sessions per second.", attrgetter("rate_max")),
    ("connections_total", C, "Total number of connections.", attrgetter("tot_sess")),
    ("connections_rate_max", G, "Maximum observed number of connections per second.", attrgetter("rate_max")),
)
# Frontends in http mode only.
_FRONTEND_HTTP: tuple[tuple[str, str, str, _Getter], ...] = (
    ("http_requests_total", C, "Total number of HTTP requests received.", attrgetter("req_tot")),
    ("http_requests_rate_max", G, "Maximum observed number of HTTP requests per second.", attrgetter("req_rate_max")),
)
_BACKEND: tuple[tuple[str, str, str, _Getter], ...] = (
    ("current_queue", G, "Current number of queued requests.", lambda b: len(b.queue)),
    ("max_queue", G, "Maximum observed number of queued requests.", attrgetter("qmax")),
    ("current_sessions", G, "Current number of active sessions.", attrgetter("cur_sess")),
    ("max_sessions", G, "Maximum observed number of active sessions.", attrgetter("max_sess")),
    ("sessions_total", C, "Total number of sessions.", attrgetter("tot_sess")),
    ("max_session_rate", G, "Maximum observed number of sessions per second.", attrgetter("rate_max")),
    ("bytes_in_total", C, "Current total of incoming bytes.", attrgetter("bytes_in")),
    ("bytes_out_total", C, "Current total of outgoing bytes.", attrgetter("bytes_out")),
    ("requests_denied_total", C, "Total number of denied requests.", attrgetter("dreq")),
    ("responses_denied_total", C, "Total number of denied responses.", attrgetter("dresp")),
    ("connection_errors_total", C, "Total number of connection errors.", attrgetter("econ")),
    ("response_errors_total", C, "Total number of response errors.", attrgetter("eresp")),
    ("retry_warnings_total", C, "Total number of retry warnings.", attrgetter("wretr")),
    ("redispatch_warnings_total", C, "Total number of redispatch warnings.", attrgetter("wredis")),
    ("client_aborts_total", C, "Total number of data transfers aborted by the client.", attrgetter("cli_abrt")),
    ("server_aborts_total", C, "Total number of data transfers aborted by the server.", attrgetter("srv_abrt")),
    ("loadbalanced_total", C, "Total number of times a service was selected.", attrgetter("lbtot")),
    ("active_servers", G, "Current number of active servers.", lambda b: len(b.active)),
    ("backup_servers", G, "Current number of backup servers.", lambda b: len(b.backups)),
    ("weight", G, "Service weight.", lambda b: sum(s.eweight for s in (b.active or b.backups))),
)
_BACKEND_HTTP: tuple[tuple[str, str, str, _Getter], ...] = (
    ("http_requests_total", C, "Total number of HTTP requests received.", attrgetter("req_tot")),
)
_SERVER: tuple[tuple[str, str, str, _Getter], ...] = (
    ("current_queue", G, "Current number of queued requests.", lambda s: len(s.queue)),
    ("max_queue", G, "Maximum observed number of queued requests.", attrgetter("qmax")),
    ("current_sessions", G, "Current number of active sessions.", attrgetter("cur_sess")),
    ("max_sessions", G, "Maximum observed number of active sessions.", attrgetter("max_sess")),
    ("limit_sessions", G, "Configured session limit (0: none).", attrgetter("maxconn")),
    ("sessions_total", C, "Total number of sessions.", attrgetter("tot_sess")),
    ("max_session_rate", G, "Maximum observed number of sessions per second.", attrgetter("rate_max")),
    ("bytes_in_total", C, "Current total of incoming bytes.", attrgetter("bytes_in")),
    ("bytes_out_total", C, "Current total of outgoing bytes.", attrgetter("bytes_out")),
    ("responses_denied_total", C, "Total number of denied responses.", attrgetter("dresp")),
    ("connection_errors_total", C, "Total number of connection errors.", attrgetter("econ")),
    ("response_errors_total", C, "Total number of response errors.", attrgetter("eresp")),
    ("retry_warnings_total", C, "Total number of retry warnings.", attrgetter("wretr")),
    ("redispatch_warnings_total", C, "Total number of redispatch warnings.", attrgetter("wredis")),
    ("client_aborts_total", C, "Total number of data transfers aborted by the client.", attrgetter("cli_abrt")),
    ("server_aborts_total", C, "Total number of data transfers aborted by the server.", attrgetter("srv_abrt")),
    ("loadbalanced_total", C, "Total number of times a service was selected.", attrgetter("lbtot")),
    ("weight", G, "Service weight (effective: slowstart ramps it).", attrgetter("eweight")),
    ("uweight", G, "Server's user weight.", attrgetter("uweight")),
    ("check_failures_total", C, "Total number of failed check (only when the server is up).", attrgetter("chkfail")),
    ("check_up_down_total", C, "Total number of UP->DOWN transitions.", attrgetter("chkdown")),
    ("idle_connections_current", G, "Current number of idle connections available for reuse.", lambda s: len(s.idle)),
)


class Family:
    """One metric family as read from the pool: the single source of both encoders.

    ``samples`` holds (label values, value) pairs; for a histogram the value
    is (cumulative bucket counts, +Inf last; sum).
    """

    __slots__ = ("name", "kind", "doc", "labels", "samples")

    def __init__(self, name: str, kind: str, doc: str, labels: tuple[str, ...] = ()) -> None:
        self.name = name
        self.kind = kind
        self.doc = doc
        self.labels = labels
        self.samples: list[tuple[tuple[str, ...], Any]] = []

    def to_metric(self) -> Metric:
        """The prometheus-client family (counters named without ``_total``, as it wants)."""
        labels = list(self.labels)
        if self.kind == H:
            hist = HistogramMetricFamily(self.name, self.doc, labels=labels)
            for values, (cumulative, total) in self.samples:
                hist.add_metric(list(values), [(le, float(n)) for le, n in zip(_LE, cumulative)], total)
            return hist
        fam: Metric
        if self.kind == C:
            fam = CounterMetricFamily(self.name, self.doc, labels=labels)
        else:
            fam = GaugeMetricFamily(self.name, self.doc, labels=labels)
        for values, value in self.samples:
            fam.add_metric(list(values), value)
        return fam


def _table(prefix: str, table: Iterable[tuple[str, str, str, _Getter]], objects: Sequence[Any],
           labels: tuple[str, ...], label_values: Sequence[tuple[str, ...]]) -> Iterator[Family]:
    if not objects:
        return
    pairs = list(zip(objects, label_values))
    for suffix, kind, doc, get in table:
        fam = Family(prefix + suffix, kind, doc, labels)
        fam.samples = [(values, get(obj)) for obj, values in pairs]
        yield fam


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def encode(families: Iterable[Family]) -> bytes:
    """Prometheus text format 0.0.4, byte for byte what ``generate_latest`` writes for
    the same families, at a fraction of its cost (label strings and numbers are
    formatted once per scrape, not once per sample)."""
    out: list[str] = []
    app = out.append
    numbers: dict[float, str] = {}
    label_strings: dict[tuple[str, ...], dict[tuple[str, ...], str]] = {}
    for fam in families:
        name = fam.name
        app("# HELP %s %s\n# TYPE %s %s\n" % (name, fam.doc.replace("\\", r"\\").replace("\n", r"\n"), name, fam.kind))
        names = fam.labels
        if fam.kind == H:
            _encode_histogram(fam, app, numbers)
            continue
        cache = label_strings.setdefault(names, {})
        order = sorted(range(len(names)), key=names.__getitem__)
        for values, value in fam.samples:
            ls = cache.get(values)
            if ls is None:
                ls = "{%s}" % ",".join('%s="%s"' % (names[i], _escape_label(values[i])) for i in order) if names else ""
                cache[values] = ls
            num = numbers.get(value)
            if num is None:
                num = numbers[value] = floatToGoString(value)
            app(f"{name}{ls} {num}\n")
    return "".join(out).encode("utf-8")


def _encode_histogram(fam: Family, app: Callable[[str], None], numbers: dict[float, str]) -> None:
    names = fam.labels
    for values, (cumulative, total) in fam.samples:
        pairs = sorted(zip(names, values))
        base = ",".join('%s="%s"' % (k, _escape_label(v)) for k, v in pairs)
        for le, n in zip(_LE, cumulative):
            with_le = sorted(pairs + [("le", le)])
            ls = ",".join('%s="%s"' % (k, _escape_label(v)) for k, v in with_le)
            app("%s_bucket{%s} %s\n" % (fam.name, ls, floatToGoString(n)))
        wrapped = "{%s}" % base if base else ""
        app("%s_count%s %s\n" % (fam.name, wrapped, floatToGoString(cumulative[-1])))
        app("%s_sum%s %s\n" % (fam.name, wrapped, floatToGoString(total)))


class PoolCollector:
    """A prometheus-client collector over the live pool (no state of its own).

    ``collect()`` gives prometheus-client families (any registry can hold
    this collector); ``exposition()`` renders the same families directly, for
    ``/metrics``, because ``generate_latest`` over 1000 servers takes 200-300 ms.
    """

    def __init__(self, pool: Pool, prefix: str = "lbd") -> None:
        self.pool = pool
        self.prefix = prefix

    def collect(self) -> Iterator[Metric]:
        for fam in self.families():
            yield fam.to_metric()

    def exposition(self) -> bytes:
        return encode(self.families())

    def families(self) -> Iterator[Family]:
        """Every family, read from the pool now."""
        p = self.prefix
        pool = self.pool
        now = pool.clock.seconds()
        yield from self._process(p + "_process_", pool, now)
        frontends = list(pool.frontends.values())
        yield from self._frontends(p + "_frontend_", frontends, pool.stopping)
        backends = list(pool.backends.values())
        yield from self._backends(p + "_backend_", backends, now)
        servers = [s for be in backends for s in be.servers.values()]
        yield from self._servers(p + "_server_", servers, now)

    # -- process ----------------------------------------------------------

    def _process(self, p: str, pool: Pool, now: float) -> Iterator[Family]:
        for name, kind, doc, value in (
            ("current_connections", G, "Number of active sessions.", pool.cur_conns),
            ("max_connections", G, "Maximum number of concurrent connections.", pool.maxconn),
            ("connections_total", C, "Total number of created sessions.", pool.cum_conns),
            ("requests_total", C, "Total number of requests (TCP or HTTP).", pool.cum_req),
            ("current_connection_rate", G, "Current number of connections per second.", pool.conn_rate),
            ("max_connection_rate", G, "Maximum observed number of connections per second.", pool.conn_rate_max),
            ("start_time_seconds", G, "Start time in seconds since the epoch.", pool.start_time),
            ("uptime_seconds", G, "How long ago this process was started.", max(0.0, now - pool.start_time)),
            ("stopping", G, "Non zero means stopping in progress.", 1 if pool.stopping else 0),
        ):
            fam = Family(p + name, kind, doc)
            fam.samples.append(((), value))
            yield fam
        info = Family(p + "build_info", G, "Build info.", ("version",))
        info.samples.append(((__version__,), 1))
        yield info

    # -- frontends --------------------------------------------------------

    def _frontends(self, p: str, frontends: list[Frontend], stopping: bool) -> Iterator[Family]:
        if not frontends:
            return
        labels = [(fe.name,) for fe in frontends]
        status = Family(p + "status", G, "Current status of the service, per state label value.", ("proxy", "state"))
        for fe, (px,) in zip(frontends, labels):
            current = DOWN if (stopping or fe.removed) else UP
            status.samples.extend(((px, state), 1 if state == current else 0) for state in PROXY_STATES)
        yield status
        yield from _table(p, _FRONTEND, frontends, ("proxy",), labels)
        http = [fe for fe in frontends if fe.cfg.mode == "http"]
        http_labels = [(fe.name,) for fe in http]
        yield from _table(p, _FRONTEND_HTTP, http, ("proxy",), http_labels)
        yield from _responses(p, http, ("proxy",), http_labels)

    # -- backends ---------------------------------------------------------

    def _backends(self, p: str, backends: list[Backend], now: float) -> Iterator[Family]:
        if not backends:
            return
        labels: list[tuple[str, ...]] = [(be.name,) for be in backends]
        status = Family(p + "status", G, "Current status of the service, per state label value.", ("proxy", "state"))
        for be, (px,) in zip(backends, labels):
            current = stats.backend_status(be)
            status.samples.extend(((px, state), 1 if state == current else 0) for state in PROXY_STATES)
        yield status
        yield from _table(p, _BACKEND, backends, ("proxy",), labels)
        change = Family(p + "check_last_change_seconds", G,
                        "Number of seconds since the last UP<->DOWN transition.", ("proxy",))
        change.samples = [(lv, max(0.0, now - be.last_change)) for be, lv in zip(backends, labels)]
        yield change
        downtime = Family(p + "downtime_seconds_total", C, "Total downtime (in seconds) for the service.", ("proxy",))
        downtime.samples = [(lv, be.total_downtime(now)) for be, lv in zip(backends, labels)]
        yield downtime
        http = [be for be in backends if be.cfg.mode == "http"]
        http_labels = [(be.name,) for be in http]
        yield from _table(p, _BACKEND_HTTP, http, ("proxy",), http_labels)
        yield from _responses(p, http, ("proxy",), http_labels)
        for attr, name, doc in _HISTOGRAMS:
            hist = Family(p + name, H, doc, ("proxy",))
            for be, lv in zip(backends, labels):
                h = getattr(be, attr)
                hist.samples.append((lv, ([n for _, n in h.cumulative()], h.sum)))
            yield hist

    # -- servers ----------------------------------------------------------

    def _servers(self, p: str, servers: list[Server], now: float) -> Iterator[Family]:
        if not servers:
            return
        names = ("proxy", "server")
        labels: list[tuple[str, ...]] = [(s.backend.name, s.name) for s in servers]
        pairs = list(zip(servers, labels))
        status = Family(p + "status", G, "Current status of the service, per state label value.",
                        ("proxy", "server", "state"))
        add = status.samples.append
        for srv, (px, sv) in pairs:
            current = srv.state
            for state in SERVER_STATES:
                add(((px, sv, state), 1 if state == current else 0))
        yield status
        yield from _table(p, _SERVER, servers, names, labels)
        ages = [(lv, max(0.0, now - srv.last_change)) for srv, lv in pairs]
        change = Family(p + "last_state_change_seconds", G, "Number of seconds since the last state change.", names)
        change.samples = ages
        yield change
        change_ha = Family(p + "check_last_change_seconds", G,
                           "Number of seconds since the last UP<->DOWN transition (HAProxy's name).", names)
        change_ha.samples = ages
        yield change_ha
        downtime = Family(p + "downtime_seconds_total", C, "Total downtime (in seconds) for the service.", names)
        downtime.samples = [(lv, srv.total_downtime(now)) for srv, lv in pairs]
        yield downtime
        yield from self._checks(p, [(srv, lv) for srv, lv in pairs if stats.check_enabled(srv)])
        http = [s for s in servers if s.backend.cfg.mode == "http"]
        yield from _responses(p, http, names, [(s.backend.name, s.name) for s in http])

    def _checks(self, p: str, checked: list[tuple[Server, tuple[str, ...]]]) -> Iterator[Family]:
        if not checked:
            return
        names = ("proxy", "server")
        status = Family(p + "check_status", G, "Status of last health check, per state label value.",
                        ("proxy", "server", "state"))
        code = Family(p + "check_code", G, "layer5-7 code, if available of the last health check.", names)
        duration = Family(p + "check_duration_seconds", G,
                          "Total duration of the latest server health check, in seconds.", names)
        add = status.samples.append
        for srv, lv in checked:
            current = srv.check_status
            px, sv = lv
            for state in CHECK_STATES:
                add(((px, sv, state), 1 if state == current else 0))
            has_code = current in ("L7OK", "L7OKC", "L7STS") and srv.check_code is not None
            code.samples.append((lv, srv.check_code if has_code else 0))
            if current in stats.CHECK_STATUSES and srv.check_duration is not None:
                duration.samples.append((lv, srv.check_duration))
        yield status
        yield code
        if duration.samples:
            yield duration


_HISTOGRAMS = (
    ("connect_time", "connect_time_seconds", "Time to connect to a server, per successful connection."),
    ("response_time", "response_time_seconds",
     "Time from the request sent to the response head, in http mode (empty in tcp mode)."),
    ("total_time", "total_time_seconds", "Total time of a request (http) or connection (tcp)."),
)


def _responses(p: str, objects: Sequence[Any], names: tuple[str, ...],
               labels: Sequence[tuple[str, ...]]) -> Iterator[Family]:
    if not objects:
        return
    fam = Family(p + "http_responses_total", C, "Total number of HTTP responses.", ("code", *names))
    add = fam.samples.append
    for obj, lv in zip(objects, labels):
        for code, n in zip(HTTP_CODES, obj.hrsp):
            add(((code, *lv), n))
    yield fam


def make_registry(pool: Pool, prefix: str = "lbd") -> CollectorRegistry:
    """A registry holding only lbd's collector (no process/platform collectors, no globals)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PoolCollector(pool, prefix))
    return registry


# -- the status page -------------------------------------------------------------

_CSS = """
body{font:14px/1.35 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:8px;
background:#f6f7f9;color:#1d2330}
h1{font-size:18px;margin:4px 0 8px}h2{font-size:15px;margin:16px 0 4px}
.info{color:#4a5060;margin-bottom:8px}.wrap{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;background:#fff;min-width:100%;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d5d9e0;padding:3px 6px;text-align:right;white-space:nowrap}
th{background:#e8ebf0;font-weight:600}td.n,th.n{text-align:left}
tr.px td{background:#eef1f5;font-weight:600}
tr td.UP{background:#c7f0c2}tr td.DOWN{background:#f6b8b8}tr td.MAINT{background:#d9c6a6}
tr td.DRAIN{background:#b9d6f2}tr td.GOINGDOWN{background:#fbe9a0}tr td.GOINGUP{background:#fbcf9a}
tr td.NOCHECK{background:#e3e6ea}tr td.OPEN{background:#c7f0c2}tr td.STOP{background:#f6b8b8}
td.UP,td.DOWN,td.MAINT,td.DRAIN,td.GOINGDOWN,td.GOINGUP,td.NOCHECK,td.OPEN,td.STOP{text-align:center}
.legend span{display:inline-block;padding:1px 6px;margin:2px;border:1px solid #d5d9e0}
.UP{background:#c7f0c2}.DOWN{background:#f6b8b8}.MAINT{background:#d9c6a6}.DRAIN{background:#b9d6f2}
.GOINGDOWN{background:#fbe9a0}.GOINGUP{background:#fbcf9a}.NOCHECK{background:#e3e6ea}
@media (max-width:600px){body{padding:4px;font-size:13px}th,td{padding:2px 4px}}
"""

_SERVER_COLUMNS = ("Server", "Status", "Last change", "Weight", "Cur", "Max", "Limit", "Total", "Rate",
                   "Queue", "Bytes in", "Bytes out", "Conn err", "Resp err", "Retries", "Check",
                   "Check ms", "Downtime", "Address")


def _css_class(status: str) -> str:
    if status.startswith("UP "):
        return "GOINGDOWN"
    if status.startswith("DOWN "):
        return "GOINGUP"
    if status.startswith("DRAIN"):
        return "DRAIN"
    if status == "no check":
        return "NOCHECK"
    return status if status in ("UP", "DOWN", "MAINT", "OPEN", "STOP") else "NOCHECK"


def _duration(seconds: int) -> str:
    """HAProxy's human duration: 45s, 3m12s, 2h5m, 4d7h."""
    if seconds < 60:
        return "%ds" % seconds
    if seconds < 3600:
        return "%dm%ds" % divmod(seconds, 60)
    if seconds < 86400:
        return "%dh%dm" % (seconds // 3600, seconds % 3600 // 60)
    return "%dd%dh" % (seconds // 86400, seconds % 86400 // 3600)


def _bytes(n: int) -> str:
    for unit in ("", "k", "M", "G", "T"):
        if n < 10000 or unit == "T":
            return "%d%s" % (n, unit)
        n //= 1024
    return str(n)  # pragma: no cover


def _cell(value: Any, cls: str = "") -> str:
    text = "" if value is None else html.escape(str(value))
    return "<td class=\"%s\">%s</td>" % (cls, text) if cls else "<td>%s</td>" % text


def _server_cells(row: stats.Row, name: str, cls: str = "") -> str:
    status = str(row.get("status", ""))
    check = row.get("check_status")
    if check is not None and row.get("check_code") is not None:
        check = "%s %s" % (check, row["check_code"])
    downtime = row.get("downtime")
    cells = [
        _cell(name, "n"),
        _cell(status, _css_class(status)),
        _cell(_duration(int(row.get("lastchg", 0)))),
        _cell(row.get("weight")),
        _cell(row.get("scur")), _cell(row.get("smax")), _cell(row.get("slim", "")),
        _cell(row.get("stot")), _cell("%s/%s" % (row.get("rate", 0), row.get("rate_max", 0))),
        _cell("%s/%s" % (row.get("qcur", 0), row.get("qmax", 0))),
        _cell(_bytes(int(row.get("bin", 0)))), _cell(_bytes(int(row.get("bout", 0)))),
        _cell(row.get("econ")), _cell(row.get("eresp")), _cell(row.get("wretr")),
        _cell(check, "n"), _cell(row.get("check_duration")),
        _cell(_duration(int(downtime)) if downtime is not None else ""),
        _cell(row.get("addr", ""), "n"),
    ]
    return "".join(cells)


def status_page(pool: Pool, now: float | None = None, refresh: int = STATUS_REFRESH) -> bytes:
    """The status page: ``show stat`` as tables, refreshing itself; no external assets."""
    if now is None:
        now = pool.clock.seconds()
    rows = stats.stat_rows(pool, now)
    out = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">",
        "<meta http-equiv=\"refresh\" content=\"%d\">" % refresh,
        "<title>lbd status</title><style>%s</style></head><body>" % _CSS,
        "<h1>lbd %s status</h1>" % html.escape(__version__),
        "<div class=\"info\">uptime %s &middot; %d/%d connections &middot; %d conn/s%s</div>" % (
            _duration(int(max(0.0, now - pool.start_time))), pool.cur_conns, pool.maxconn, pool.conn_rate,
            " &middot; <b>stopping</b>" if pool.stopping else ""),
    ]
    frontends = [r for r in rows if r.get("type") == stats.TYPE_FRONTEND]
    if frontends:
        out.append("<h2>Frontends</h2><div class=\"wrap\"><table id=\"frontends\"><tr>")
        out.extend("<th class=\"n\">%s</th>" % h if i == 0 else "<th>%s</th>" % h for i, h in enumerate(
            ("Frontend", "Status", "Mode", "Cur", "Max", "Limit", "Total", "Rate", "Req/s", "Requests",
             "Bytes in", "Bytes out", "Req err", "2xx", "4xx", "5xx")))
        out.append("</tr>")
        for r in frontends:
            status = str(r["status"])
            out.append("<tr data-frontend=\"%s\">" % html.escape(str(r["pxname"])))
            out.extend((
                _cell(r["pxname"], "n"), _cell(status, _css_class(status)), _cell(r.get("mode")),
                _cell(r.get("scur")), _cell(r.get("smax")), _cell(r.get("slim")), _cell(r.get("stot")),
                _cell("%s/%s" % (r.get("rate", 0), r.get("rate_max", 0))),
                _cell("%s/%s" % (r.get("req_rate", 0), r.get("req_rate_max", 0))),
                _cell(r.get("req_tot")), _cell(_bytes(int(r.get("bin", 0)))), _cell(_bytes(int(r.get("bout", 0)))),
                _cell(r.get("ereq")), _cell(r.get("hrsp_2xx", "")), _cell(r.get("hrsp_4xx", "")),
                _cell(r.get("hrsp_5xx", "")),
            ))
            out.append("</tr>")
        out.append("</table></div>")
    servers: list[stats.Row] = []
    for r in rows:
        if r.get("type") == stats.TYPE_SERVER:
            servers.append(r)
            continue
        if r.get("type") != stats.TYPE_BACKEND:
            continue
        name = html.escape(str(r["pxname"]))
        out.append("<h2>Backend %s <small>(%s, %s)</small></h2>" % (
            name, html.escape(str(r.get("mode", ""))), html.escape(str(r.get("algo", "")))))
        out.append("<div class=\"wrap\"><table class=\"backend\" data-backend=\"%s\"><tr>" % name)
        out.extend("<th class=\"n\">%s</th>" % h if i in (0, 15, 18) else "<th>%s</th>" % h
                   for i, h in enumerate(_SERVER_COLUMNS))
        out.append("</tr>")
        for s in servers:
            out.append("<tr class=\"server\" data-server=\"%s\" data-state=\"%s\">%s</tr>" % (
                html.escape(str(s["svname"])), html.escape(str(s.get("status", ""))),
                _server_cells(s, str(s["svname"]))))
        out.append("<tr class=\"px\" data-state=\"%s\">%s</tr>" % (
            html.escape(str(r.get("status", ""))), _server_cells(r, "Backend")))
        out.append("</table></div>")
        servers = []
    out.append("<p class=\"legend\">")
    for cls, label in (("UP", "UP"), ("GOINGDOWN", "UP, going down"), ("GOINGUP", "DOWN, going up"),
                       ("DOWN", "DOWN"), ("DRAIN", "DRAIN"), ("MAINT", "MAINT"), ("NOCHECK", "no check")):
        out.append("<span class=\"%s\">%s</span>" % (cls, label))
    out.append("</p></body></html>\n")
    return "".join(out).encode("utf-8")


# -- the HTTP listener ---------------------------------------------------------------


class MetricsResource(Resource):
    """``/metrics``, ``/`` and ``/healthz``; everything else is 404."""

    isLeaf = True

    def __init__(self, service: LBService) -> None:
        super().__init__()
        self.service = service
        # As the service says on reload: [metrics] changes wait for a restart.
        self.prefix = service.config.metrics.prefix

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"server", b"lbd")
        request.setHeader(b"cache-control", b"no-store")
        path = request.path
        if path == b"/metrics":
            request.setHeader(b"content-type", CONTENT_TYPE)
            return PoolCollector(self.service.pool, self.prefix).exposition()
        if path == b"/":
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            request.setHeader(b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'")
            request.setHeader(b"x-content-type-options", b"nosniff")
            return status_page(self.service.pool)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        if path == b"/healthz":
            if self.service.stopping:
                request.setResponseCode(503)
                return b"stopping\n"
            return b"OK\n"
        request.setResponseCode(404)
        return b"Not Found\n"


class _BoundedRequest(Request):
    """A request whose body may not exceed the site's ``max_body``."""

    _seen = 0

    channel: _BoundedChannel

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.channel.site.max_body:
            self.channel.refuse(413, b"Payload Too Large")
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        self._seen += len(data)
        if self._seen > self.channel.site.max_body:
            self.channel.refuse(413, b"Payload Too Large")
            return
        super().handleContentChunk(data)


class _BoundedChannel(HTTPChannel):
    """HTTPChannel with a head size limit, a per-request deadline and polite refusals."""

    site: MetricsSite               # set by Site.buildProtocol
    transport: Any
    _deadline: IDelayedCall | None = None
    _linger: IDelayedCall | None = None
    _head = 0
    _refused = False

    def connectionMade(self) -> None:
        self.MAX_LENGTH = self.site.max_head     # LineReceiver's longest line
        super().connectionMade()

    def lineReceived(self, line: bytes) -> None:
        if self._refused:
            return
        if self._deadline is None:
            self._deadline = self.callLater(self.site.request_deadline, self._expired)
        self._head += len(line) + 2
        if self._head > self.site.max_head:
            self.refuse(431, b"Request Header Fields Too Large")
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.refuse(431, b"Request Header Fields Too Large")

    def rawDataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        super().rawDataReceived(data)

    def allContentReceived(self) -> None:
        if self._refused:
            return
        self._cancel_deadline()
        self._head = 0
        super().allContentReceived()

    def _expired(self) -> None:
        self._deadline = None
        self.refuse(408, b"Request Timeout")

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def refuse(self, code: int, reason: bytes) -> None:
        """Answer ``code`` and close: half-close, drain the client's input briefly, then abort.

        Closing at once with unread input would send a reset that can destroy
        the answer before the client reads it.
        """
        if self._refused:
            return
        self._refused = True
        self._cancel_deadline()
        self.setTimeout(None)
        body = b"%d %s\n" % (code, reason)
        self.transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                             b"Connection: close\r\n\r\n%s" % (code, reason, len(body), body))
        self._linger = self.callLater(self.site.linger, self.transport.abortConnection)
        half_close = getattr(self.transport, "loseWriteConnection", None)
        if half_close is not None:
            half_close()
        else:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_deadline()
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        super().connectionLost(reason)


class MetricsSite(Site):
    """The metrics listener's factory: bounded requests, no per-request log lines.

    The limits are attributes so a test can shorten them; ``timeout`` (the
    idle timeout) is twisted.web's own.
    """

    noisy = False
    displayTracebacks = False
    protocol = _BoundedChannel  # type: ignore[assignment]
    requestFactory = _BoundedRequest
    max_head = MAX_HEAD
    max_body = MAX_BODY
    request_deadline = REQUEST_DEADLINE
    linger = LINGER

    def log(self, request: _HTTPRequest) -> None:
        """Scrapes every few seconds would flood the daemon's log: not logged."""

    def logPrefix(self) -> str:
        return "metrics"


def make_site(service: LBService) -> MetricsSite:
    """The ``metrics.bind`` listener's factory for ``service`` (its reactor drives the timeouts)."""
    return MetricsSite(MetricsResource(service), timeout=IDLE_TIMEOUT, reactor=service.reactor)
