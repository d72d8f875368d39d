"""Runtime objects: frontends, backends, servers, their state and counters.

Shared by balancing, health, admin and metrics so that none of those import
each other. Counters are plain ints bumped on the hot path; metrics and
``show stat`` read them at scrape time.
"""
from __future__ import annotations

import bisect
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol

from lbd.logsetup import Logger

from lbd.config import BackendConfig, FrontendConfig, ServerConfig

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

    from lbd.balance import Balancer

# Server states as HAProxy names them.
UP = "UP"
DOWN = "DOWN"
MAINT = "MAINT"
DRAIN = "DRAIN"
NOLB = "NOLB"
STATES = (UP, DOWN, MAINT, DRAIN, NOLB)

# HAProxy's check statuses that report a finished check, in HAProxy's order
# (src/check.c, check_statuses), with their descriptions (``check_desc``).
CHECK_STATUSES: dict[str, str] = {
    "HANA": "Health analyze",
    "SOCKERR": "Socket error",
    "L4OK": "Layer4 check passed",
    "L4TOUT": "Layer4 timeout",
    "L4CON": "Layer4 connection problem",
    "L6OK": "Layer6 check passed",
    "L6TOUT": "Layer6 timeout",
    "L6RSP": "Layer6 invalid response",
    "L7TOUT": "Layer7 timeout",
    "L7RSP": "Layer7 invalid response",
    "L7OK": "Layer7 check passed",
    "L7OKC": "Layer7 check conditionally passed",
    "L7STS": "Layer7 wrong status",
    "PROCERR": "External check error",
    "PROCTOUT": "External check timeout",
    "PROCOK": "External check passed",
}

# Histogram buckets in seconds: sub-millisecond to tens of seconds.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
           0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Histogram:
    """A fixed-bucket histogram filled by ``bisect``; read at scrape time."""

    __slots__ = ("counts", "sum", "count")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, cumulative count) pairs, +Inf last."""
        out = []
        total = 0
        for bound, n in zip(BUCKETS + (float("inf"),), self.counts):
            total += n
            out.append((bound, total))
        return out


class Session(Protocol):
    """What a server's live connection must offer to be shut down by an operator."""

    def abort(self) -> None: ...


class Counters:
    """Counters common to frontends, backends and servers (HAProxy's stats)."""

    __slots__ = ("cur_sess", "max_sess", "tot_sess", "bytes_in", "bytes_out",
                 "dreq", "dresp", "ereq", "econ", "eresp", "wretr", "wredis",
                 "hrsp", "req_tot", "cli_abrt", "srv_abrt", "rate", "rate_max",
                 "_rate_prev", "req_rate", "req_rate_max", "_req_rate_prev",
                 "comp_in")

    def __init__(self) -> None:
        self.cur_sess = 0
        self.max_sess = 0
        self.tot_sess = 0
        self.bytes_in = 0       # from clients (frontend) / towards servers (backend, server)
        self.bytes_out = 0
        self.dreq = 0
        self.dresp = 0
        self.ereq = 0
        self.econ = 0
        self.eresp = 0
        self.wretr = 0
        self.wredis = 0
        self.hrsp = [0, 0, 0, 0, 0, 0]   # 1xx 2xx 3xx 4xx 5xx other
        self.req_tot = 0
        self.cli_abrt = 0
        self.srv_abrt = 0
        self.rate = 0
        self.rate_max = 0
        self._rate_prev = 0
        self.req_rate = 0
        self.req_rate_max = 0
        self._req_rate_prev = 0
        self.comp_in = 0

    def count_status(self, status: int) -> None:
        idx = status // 100 - 1
        self.hrsp[idx if 0 <= idx < 5 else 5] += 1

    def tick_rates(self) -> None:
        """Called once a second: sessions and requests of the last second."""
        self.rate = self.tot_sess - self._rate_prev
        self._rate_prev = self.tot_sess
        if self.rate > self.rate_max:
            self.rate_max = self.rate
        self.req_rate = self.req_tot - self._req_rate_prev
        self._req_rate_prev = self.req_tot
        if self.req_rate > self.req_rate_max:
            self.req_rate_max = self.req_rate


class Server(Counters):
    """One server of a backend: admin state, operational state and counters."""

    __slots__ = ("name", "backend", "cfg", "host", "port", "uweight", "iweight", "eweight",
                 "maint", "drain", "up", "checked", "health_disabled", "added",
                 "maxconn", "lbtot", "queue", "qmax", "sessions", "idle",
                 "chkfail", "chkdown", "last_change", "downtime", "_down_since",
                 "check_status", "check_code", "check_duration", "check_desc",
                 "slowstart_until", "lb_key", "sid", "checker")

    def __init__(self, backend: Backend, cfg: ServerConfig, sid: int, now: float) -> None:
        super().__init__()
        self.name = cfg.name
        self.backend = backend
        self.cfg = cfg
        self.host = cfg.host
        self.port = cfg.port
        self.iweight = cfg.weight      # configured (initial) weight, the base for "W%"
        self.uweight = cfg.weight      # weight set by the operator
        self.eweight = cfg.weight      # effective weight (slowstart ramps it)
        self.maint = cfg.disabled      # admin MAINT
        self.drain = False             # admin DRAIN
        self.up = True                 # operational: health checks say it works
        self.checked = backend.cfg.health is not None and cfg.check
        self.health_disabled = False
        self.added = False             # added at runtime by "add server"
        self.maxconn = cfg.maxconn
        self.lbtot = 0
        self.queue: deque[Any] = deque()
        self.qmax = 0
        self.sessions: set[Session] = set()
        self.idle: list[Any] = []      # pooled idle server connections (http mode)
        self.chkfail = 0
        self.chkdown = 0
        self.last_change = now
        self.downtime = 0.0
        self._down_since: float | None = now if (self.maint) else None
        self.check_status = ""
        self.check_code: int | None = None
        self.check_duration: float | None = None
        self.check_desc = ""
        self.slowstart_until = 0.0
        self.lb_key: Any = None        # the balancer's own bookkeeping
        self.sid = sid
        self.checker: Any = None       # the health checker driving ``up``, if any

    @property
    def address(self) -> str:
        return self.cfg.address

    @property
    def state(self) -> str:
        """UP, DOWN, MAINT, DRAIN or NOLB, as HAProxy reports them."""
        if self.maint:
            return MAINT
        if not self.up:
            return DOWN
        if self.drain:
            return DRAIN
        return UP

    @property
    def usable(self) -> bool:
        """Takes new traffic: running, not in maintenance or drain, weight above 0."""
        return self.up and not self.maint and not self.drain and self.eweight > 0

    @property
    def full(self) -> bool:
        return 0 < self.maxconn <= self.cur_sess

    def total_downtime(self, now: float) -> float:
        """Seconds spent DOWN or in MAINT, the current period included (stats, metrics)."""
        extra = now - self._down_since if self._down_since is not None else 0.0
        return self.downtime + extra

    def __repr__(self) -> str:
        return "<Server %s/%s %s>" % (self.backend.name, self.name, self.state)


class Waiter(Protocol):
    """A connection waiting in a queue for a server slot."""

    def dequeued(self, server: Server) -> None: ...


class Backend(Counters):
    """A pool of servers and the balancer that picks among them."""

    log = Logger()

    __slots__ = ("name", "cfg", "servers", "clock", "balancer", "active", "backups",
                 "queue", "qmax", "lbtot", "last_change", "downtime", "_down_since",
                 "connect_time", "response_time", "total_time", "_next_sid", "listeners",
                 "_ss_call", "iid", "removed")

    def __init__(self, cfg: BackendConfig, clock: IReactorTime, iid: int = 0) -> None:
        super().__init__()
        from lbd.balance import make_balancer

        self.name = cfg.name
        self.cfg = cfg
        self.clock = clock
        self.iid = iid
        self.servers: dict[str, Server] = {}
        self._next_sid = 1
        now = clock.seconds()
        for scfg in cfg.servers:
            self.servers[scfg.name] = Server(self, scfg, self._next_sid, now)
            self._next_sid += 1
        self.active: list[Server] = []
        self.backups: list[Server] = []
        self.queue: deque[Waiter] = deque()
        self.qmax = 0
        self.lbtot = 0
        self.last_change = now
        self.downtime = 0.0
        self._down_since: float | None = None
        self.connect_time = Histogram()
        self.response_time = Histogram()
        self.total_time = Histogram()
        self.listeners: list[Callable[[Server], None]] = []
        self._ss_call: IDelayedCall | None = None
        self.removed = False
        self.balancer: Balancer = make_balancer(cfg.balance, self)
        self.refresh()

    # -- state --------------------------------------------------------

    def refresh(self) -> None:
        """Recompute who may take traffic and tell the balancer.

        Called on every state or weight change (rare), never per request.
        """
        active = [s for s in self.servers.values() if s.usable and not s.cfg.backup]
        backups = [s for s in self.servers.values() if s.usable and s.cfg.backup]
        was_available = bool(self.active or self.backups)
        self.active = active
        self.backups = backups
        self.balancer.update(active if active else backups)
        now_available = bool(active or backups)
        if was_available != now_available or (not now_available and self._down_since is None):
            now = self.clock.seconds()
            self.last_change = now
            if now_available:
                if self._down_since is not None:
                    self.downtime += now - self._down_since
                    self._down_since = None
            else:
                self._down_since = now
                if self.servers:
                    self.log.error("backend {backend} has no server available!", backend=self.name)
        if now_available:
            self.drain_queue()

    @property
    def available(self) -> bool:
        return bool(self.active or self.backups)

    @property
    def status(self) -> str:
        return UP if self.available else DOWN

    def total_downtime(self, now: float) -> float:
        extra = now - self._down_since if self._down_since is not None else 0.0
        return self.downtime + extra

    def _changed(self, srv: Server, was: str) -> None:
        now = self.clock.seconds()
        state = srv.state
        if state != was:
            srv.last_change = now
            down_now = state in (DOWN, MAINT)
            if down_now and srv._down_since is None:
                srv._down_since = now
            elif not down_now and srv._down_since is not None:
                srv.downtime += now - srv._down_since
                srv._down_since = None
        self.refresh()
        for listener in list(self.listeners):
            listener(srv)

    def set_operational(self, srv: Server, up: bool, reason: str = "") -> None:
        """Health checks decided that ``srv`` is UP or DOWN."""
        if srv.up == up:
            return
        was = srv.state
        srv.up = up
        if not up:
            srv.chkdown += 1
        if up and srv.cfg.slowstart > 0:
            self._start_slowstart(srv)
        if not srv.maint:
            # Logged before the refresh, so that "has no server available!" follows it, as in HAProxy.
            active = sum(1 for s in self.servers.values() if s.usable and not s.cfg.backup)
            backup = sum(1 for s in self.servers.values() if s.usable and s.cfg.backup)
            kind = "Backup Server" if srv.cfg.backup else "Server"
            log = self.log.warn if not up else self.log.info
            log(
                "{kind} {backend}/{server} is {state}{reason}. {active} active and {backup} backup servers {left}.",
                kind=kind, backend=self.name, server=srv.name, state=UP if up else DOWN,
                reason=(", reason: " + reason) if reason else "", active=active, backup=backup,
                left="online" if up else "left",   # HAProxy's words (server.c, srv_append_more)
            )
        self._changed(srv, was)

    def set_maint(self, srv: Server, on: bool) -> None:
        if srv.maint == on:
            return
        was = srv.state
        srv.maint = on
        if not on and srv.checker is not None:
            srv.checker.restart()
        if not on and srv.up and srv.cfg.slowstart > 0:
            # Leaving maintenance is coming back into service: ramp up, as HAProxy does.
            self._start_slowstart(srv)
        self._changed(srv, was)
        self.log.info("Server {backend}/{server} is {state} (by operator).",
                      backend=self.name, server=srv.name, state=srv.state)

    def set_drain(self, srv: Server, on: bool) -> None:
        if srv.drain == on:
            return
        was = srv.state
        srv.drain = on
        self._changed(srv, was)

    def set_weight(self, srv: Server, weight: int) -> None:
        srv.uweight = weight
        if srv.slowstart_until > self.clock.seconds():
            self._slowstart_tick()
        else:
            srv.eweight = weight
        self._changed(srv, srv.state)

    # -- slowstart ----------------------------------------------------

    def _start_slowstart(self, srv: Server) -> None:
        now = self.clock.seconds()
        srv.slowstart_until = now + srv.cfg.slowstart
        srv.eweight = self._slowstart_weight(srv, now)
        if self._ss_call is None or not self._ss_call.active():
            self._ss_call = self.clock.callLater(1.0, self._slowstart_tick)

    def _slowstart_weight(self, srv: Server, now: float) -> int:
        left = srv.slowstart_until - now
        if left <= 0 or srv.cfg.slowstart <= 0:
            return srv.uweight
        frac = 1.0 - left / srv.cfg.slowstart
        # As HAProxy: the weight grows linearly and is never 0 while UP.
        w = (srv.uweight * frac * 100 + 99) // 100
        return max(1 if srv.uweight else 0, min(srv.uweight, int(w)))

    def _slowstart_tick(self) -> None:
        now = self.clock.seconds()
        pending = False
        changed = False
        for srv in self.servers.values():
            if srv.slowstart_until:
                w = self._slowstart_weight(srv, now)
                if w != srv.eweight:
                    srv.eweight = w
                    changed = True
                if now >= srv.slowstart_until:
                    srv.slowstart_until = 0.0
                else:
                    pending = True
        if changed:
            self.refresh()
        if pending:
            self._ss_call = self.clock.callLater(1.0, self._slowstart_tick)
        else:
            self._ss_call = None

    # -- picking and accounting --------------------------------------

    def pick(self, client: bytes, avoid: Server | None = None) -> Server | None:
        """A server for a new connection, or None (all full or none usable)."""
        return self.balancer.pick(client, avoid)

    def take(self, srv: Server) -> None:
        """A connection to ``srv`` is starting."""
        srv.cur_sess += 1
        srv.tot_sess += 1
        srv.lbtot += 1
        if srv.cur_sess > srv.max_sess:
            srv.max_sess = srv.cur_sess
        self.cur_sess += 1
        self.tot_sess += 1
        self.lbtot += 1
        if self.cur_sess > self.max_sess:
            self.max_sess = self.cur_sess
        self.balancer.taken(srv)

    def release(self, srv: Server) -> None:
        """A connection to ``srv`` ended: free its slot, serve a queued waiter."""
        srv.cur_sess -= 1
        self.cur_sess -= 1
        self.balancer.released(srv)
        if self.queue:
            self.drain_queue()

    def enqueue(self, waiter: Waiter) -> None:
        self.queue.append(waiter)
        if len(self.queue) > self.qmax:
            self.qmax = len(self.queue)

    def dequeue(self, waiter: Waiter) -> None:
        try:
            self.queue.remove(waiter)
        except ValueError:
            pass

    def drain_queue(self) -> None:
        while self.queue:
            srv = self.pick(b"")
            if srv is None:
                return
            waiter = self.queue.popleft()
            waiter.dequeued(srv)

    # -- runtime membership ------------------------------------------

    def add_server(self, cfg: ServerConfig) -> Server:
        srv = Server(self, cfg, self._next_sid, self.clock.seconds())
        self._next_sid += 1
        self.servers[cfg.name] = srv
        self.refresh()
        return srv

    def remove_server(self, name: str) -> Server:
        srv = self.servers.pop(name)
        if srv.checker is not None:
            srv.checker.stop()
            srv.checker = None
        self.refresh()
        return srv



class Frontend(Counters):
    """A listening proxy: counters and the backend choice."""

    __slots__ = ("name", "cfg", "maxconn", "listening", "iid", "sessions", "removed")

    def __init__(self, cfg: FrontendConfig, iid: int = 0) -> None:
        super().__init__()
        self.name = cfg.name
        self.cfg = cfg
        self.maxconn = cfg.maxconn
        self.listening = False
        self.iid = iid
        self.sessions: set[Session] = set()
        self.removed = False


class Pool:
    """Everything lbd runs: the root that admin, metrics and reload see."""

    __slots__ = ("clock", "frontends", "backends", "maxconn", "cur_conns", "max_conns",
                 "cum_conns", "cum_req", "start_time", "stopping", "_next_iid", "conn_rate",
                 "conn_rate_max", "_conn_prev")

    def __init__(self, clock: IReactorTime, maxconn: int) -> None:
        self.clock = clock
        self.frontends: dict[str, Frontend] = {}
        self.backends: dict[str, Backend] = {}
        self.maxconn = maxconn
        self.cur_conns = 0
        self.max_conns = 0
        self.cum_conns = 0
        self.cum_req = 0
        self.start_time = clock.seconds()
        self.stopping = False
        self._next_iid = 1
        self.conn_rate = 0
        self.conn_rate_max = 0
        self._conn_prev = 0

    def next_iid(self) -> int:
        iid = self._next_iid
        self._next_iid += 1
        return iid

    def add_backend(self, cfg: BackendConfig) -> Backend:
        be = Backend(cfg, self.clock, self.next_iid())
        self.backends[cfg.name] = be
        return be

    def add_frontend(self, cfg: FrontendConfig) -> Frontend:
        fe = Frontend(cfg, self.next_iid())
        self.frontends[cfg.name] = fe
        return fe

    def all_servers(self) -> Iterable[Server]:
        for be in self.backends.values():
            yield from be.servers.values()

    def tick(self) -> None:
        """Once a second: refresh the per-second rates everywhere."""
        self.conn_rate = self.cum_conns - self._conn_prev
        self._conn_prev = self.cum_conns
        if self.conn_rate > self.conn_rate_max:
            self.conn_rate_max = self.conn_rate
        for fe in self.frontends.values():
            fe.tick_rates()
        for be in self.backends.values():
            be.tick_rates()
            for srv in be.servers.values():
                srv.tick_rates()
