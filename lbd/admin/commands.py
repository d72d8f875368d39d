"""The admin commands: a table of (words, level, handler, usage, help).

Handlers are plain functions over the service and its pool: they take the
CLI session and the command's words and return a ``Reply``. No transport
here, so tests call ``execute(service, "disable server web/web1")`` and
compare texts. The texts are HAProxy 2.6's where HAProxy has the command,
so scripts written for HAProxy's runtime API read lbd's answers unchanged.
"""
from __future__ import annotations

import json
import os
import resource
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from lbd import __version__
from lbd import config as _config
from lbd.pool import MAINT

if TYPE_CHECKING:
    from lbd.pool import Backend, Server
    from lbd.service import LBService

# Permission levels, lowest first (HAProxy's "stats socket ... level").
LEVELS = ("user", "operator", "admin")

# Message severities (syslog numbers, as HAProxy's "set severity-output").
ERR = 3
WARNING = 4
NOTICE = 5
INFO = 6
SEVERITY_NAMES = {0: "emerg", 1: "alert", 2: "crit", 3: "err", 4: "warning", 5: "notice", 6: "info", 7: "debug"}

DEFAULT_TIMEOUT = 10.0      # seconds of client silence before the socket closes (HAProxy's stats timeout)


def rank(level: str) -> int:
    return LEVELS.index(level)


@dataclass(frozen=True)
class Reply:
    """One command's answer.

    ``severity`` is None for a dump (``show ...``) and a syslog level for a
    message: ERR (3) for errors, INFO (6) for notices such as "New server
    registered.". Empty text means success with nothing to say.
    """

    text: str = ""
    severity: int | None = None

    @property
    def error(self) -> bool:
        return self.severity is not None and self.severity <= WARNING


OK = Reply()


def _err(text: str) -> Reply:
    return Reply(text, ERR)


def _info(text: str) -> Reply:
    return Reply(text, INFO)


class Session:
    """The state of one CLI connection that commands may read or change."""

    __slots__ = ("level", "prompt", "severity_output", "timeout", "closing")

    def __init__(self, level: str = "admin") -> None:
        self.level = level                  # may only be lowered ("operator", "user")
        self.prompt = False                 # interactive mode: stay open, print "> "
        self.severity_output = "none"       # none | number | string
        self.timeout = DEFAULT_TIMEOUT
        self.closing = False                # "quit" was seen


Handler = Callable[["LBService", Session, "list[str]"], Reply]


@dataclass(frozen=True)
class Command:
    words: tuple[str, ...]
    level: str
    handler: Handler
    usage: str
    help: str


# ---------------------------------------------------------------- helpers

_NO_SERVER_ARG = "Require 'backend/server'."


def _find_server(service: LBService, arg: str | None) -> tuple[Backend, Server] | Reply:
    """``backend/server`` to objects, or the HAProxy error for what is wrong."""
    if not arg or "/" not in arg:
        return _err(_NO_SERVER_ARG)
    bname, sname = arg.split("/", 1)
    be = service.pool.backends.get(bname)
    if be is None:
        return _err("No such backend.")
    srv = be.servers.get(sname)
    if srv is None:
        return _err("No such server.")
    return be, srv


def _arg(args: list[str], i: int) -> str | None:
    return args[i] if len(args) > i else None


def _changed(service: LBService) -> None:
    """Admin state changed: persist it when a state file is configured."""
    save = getattr(service, "save_state", None)
    if save is not None:
        save()


def parse_weight(srv: Server, value: str | None) -> int | str:
    """A weight request (``W`` or ``W%`` of the configured weight) to an int, or HAProxy's error text."""
    if not value:
        return "Require <weight> or <weight%>."
    digits = value[1:] if value[:1] in "+-" else value
    n = 0
    end = 0
    while end < len(digits) and digits[end].isdigit():
        end += 1
    if end == 0:
        return "Empty weight string empty or preceded by garbage"
    n = int(digits[:end])
    if value[:1] == "-":
        n = -n
    rest = digits[end:]
    if rest == "%":
        if n < 0:
            return "Relative weight must be positive."
        w = min(srv.iweight * min(n, 25600) // 100, _config.MAX_WEIGHT)
    elif n < 0 or n > _config.MAX_WEIGHT:
        return "Absolute weight can only be between 0 and 256 inclusive."
    elif rest:
        return "Trailing garbage in weight string"
    else:
        w = n
    if w and w != srv.iweight and srv.backend.cfg.balance == "static-rr":
        return "Backend is using a static LB algorithm and only accepts weights '0%' and '100%'."
    return w


def _set_ready(be: Backend, srv: Server) -> None:
    be.set_drain(srv, False)
    be.set_maint(srv, False)


def _set_drain(be: Backend, srv: Server) -> None:
    be.set_drain(srv, True)
    be.set_maint(srv, False)


def _set_maint(be: Backend, srv: Server) -> None:
    be.set_maint(srv, True)
    be.set_drain(srv, False)


# ---------------------------------------------------------------- session commands

def cmd_help(service: LBService, session: Session, args: list[str]) -> Reply:
    return Reply(help_text(session.level, args[1:]))


def cmd_prompt(service: LBService, session: Session, args: list[str]) -> Reply:
    session.prompt = not session.prompt
    return OK


def cmd_quit(service: LBService, session: Session, args: list[str]) -> Reply:
    session.closing = True
    return OK


def cmd_lower_level(service: LBService, session: Session, args: list[str]) -> Reply:
    # "operator" and "user" only ever lower the level; the table's level check refuses raising it.
    session.level = args[0]
    return OK


def cmd_show_cli_level(service: LBService, session: Session, args: list[str]) -> Reply:
    return Reply(session.level + "\n")


def cmd_severity_output(service: LBService, session: Session, args: list[str]) -> Reply:
    value = _arg(args, 2)
    if value not in ("none", "number", "string"):
        return _err("one of 'none', 'number', 'string' is a required argument")
    session.severity_output = value
    return OK


def cmd_set_timeout(service: LBService, session: Session, args: list[str]) -> Reply:
    if _arg(args, 2) != "cli":
        return _err("'set timeout' only supports 'cli'.")
    value = _arg(args, 3)
    if value is None:
        return _err("Expects an integer value.")
    try:
        seconds = float(value) if value.isdigit() else _config.parse_duration(value)
    except ValueError:
        return _err("Invalid timeout value.")
    if seconds <= 0:
        return _err("Invalid timeout value.")
    session.timeout = seconds
    return OK


# ---------------------------------------------------------------- show

def _uptime(seconds: int) -> str:
    return "%dd %dh%02dm%02ds" % (seconds // 86400, seconds // 3600 % 24, seconds // 60 % 60, seconds % 60)


# (name, json type, origin, nature, scope, position) as HAProxy 2.6 tags them.
_INFO_FIELDS = (
    ("Name", "str", "Product", "Output", "Service", 0),
    ("Version", "str", "Product", "Output", "Service", 1),
    ("Nbthread", "u32", "Config", "Gauge", "Service", 3),
    ("Nbproc", "u32", "Config", "Gauge", "Service", 4),
    ("Process_num", "u32", "Key", "Gauge", "Process", 5),
    ("Pid", "u32", "Status", "Gauge", "Process", 6),
    ("Uptime", "str", "Metric", "Duration", "Process", 7),
    ("Uptime_sec", "u32", "Metric", "Duration", "Process", 8),
    ("Memmax_MB", "u32", "Config", "Limit", "Process", 9),
    ("Ulimit-n", "u32", "Config", "Limit", "Process", 13),
    ("Maxsock", "u32", "Config", "Limit", "Process", 14),
    ("Maxconn", "u32", "Config", "Limit", "Process", 15),
    ("Hard_maxconn", "u32", "Config", "Limit", "Process", 16),
    ("CurrConns", "u32", "Metric", "Gauge", "Process", 17),
    ("CumConns", "u32", "Metric", "Counter", "Process", 18),
    ("CumReq", "u32", "Metric", "Counter", "Process", 19),
    ("ConnRate", "u32", "Metric", "Rate", "Process", 26),
    ("ConnRateLimit", "u32", "Config", "Limit", "Process", 27),
    ("MaxConnRate", "u32", "Metric", "Max", "Process", 28),
    ("SessRate", "u32", "Metric", "Rate", "Process", 29),
    ("SessRateLimit", "u32", "Config", "Limit", "Process", 30),
    ("MaxSessRate", "u32", "Metric", "Rate", "Process", 31),
    ("node", "str", "Config", "Output", "Service", 50),
    ("Stopping", "u32", "Metric", "Gauge", "Process", 52),
    ("Jobs", "u32", "Metric", "Gauge", "Process", 53),
    ("Listeners", "u32", "Metric", "Gauge", "Process", 55),
    ("TotalBytesOut", "u64", "Metric", "Gauge", "Process", 61),
    ("Start_time_sec", "u32", "Metric", "Duration", "Process", 70),
    # SPEC's spelling of Maxconn, kept alongside HAProxy's for scripts written against either.
    ("MaxConn", "u32", "Config", "Limit", "Process", 72),
)


def info_values(service: LBService) -> dict[str, Any]:
    """``show info``'s fields, read from the live pool."""
    pool = service.pool
    now = pool.clock.seconds()
    up = max(int(now - pool.start_time), 0)
    try:
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (OSError, ValueError):  # pragma: no cover
        nofile = 0
    listeners = sum(len(p) for p in service.ports.values()) + len(service.extra_ports)
    bytes_out = sum(fe.bytes_out for fe in pool.frontends.values())
    return {
        "Name": "lbd",
        "Version": __version__,
        "Nbthread": 1,
        "Nbproc": 1,
        "Process_num": 1,
        "Pid": os.getpid(),
        "Uptime": _uptime(up),
        "Uptime_sec": up,
        "Memmax_MB": 0,
        "Ulimit-n": nofile,
        "Maxsock": nofile,
        "Maxconn": pool.maxconn,
        "Hard_maxconn": service.config.global_.maxconn,
        "CurrConns": pool.cur_conns,
        "CumConns": pool.cum_conns,
        "CumReq": pool.cum_req,
        "ConnRate": pool.conn_rate,
        "ConnRateLimit": 0,
        "MaxConnRate": pool.conn_rate_max,
        "SessRate": pool.conn_rate,
        "SessRateLimit": 0,
        "MaxSessRate": pool.conn_rate_max,
        "node": socket.gethostname(),
        "Stopping": 1 if (pool.stopping or service.stopping) else 0,
        "Jobs": pool.cur_conns + listeners,
        "Listeners": listeners,
        "TotalBytesOut": bytes_out,
        "Start_time_sec": int(pool.start_time),
        "MaxConn": pool.maxconn,
    }


def cmd_show_info(service: LBService, session: Session, args: list[str]) -> Reply:
    values = info_values(service)
    if "json" in args[2:]:
        out = []
        for name, typ, origin, nature, scope, pos in _INFO_FIELDS:
            out.append({
                "field": {"pos": pos, "name": name},
                "processNum": 1,
                "tags": {"origin": origin, "nature": nature, "scope": scope},
                "value": {"type": typ, "value": values[name]},
            })
        return Reply(json.dumps(out, separators=(",", ":")) + "\n")
    return Reply("".join("%s: %s\n" % (name, values[name]) for name, *_ in _INFO_FIELDS))


_STAT_FILTER_ERROR = ("'show stat' takes json, up, no-maint and the filter '<iid> <type> <sid>' "
                      "(-1 for all, as in 'show stat -1 4 -1').")


def cmd_show_stat(service: LBService, session: Session, args: list[str]) -> Reply:
    from lbd import stats

    words = args[2:]
    flags = {w for w in words if w in ("json", "up", "no-maint")}
    numbers = [w for w in words if w not in flags]
    iid = kind = sid = -1
    if numbers:
        if len(numbers) != 3 or not all(n.lstrip("-").isdigit() for n in numbers):
            return _err(_STAT_FILTER_ERROR)
        iid, kind, sid = (int(n) for n in numbers)
    rows = [r for r in stats.stat_rows(service.pool)
            if _row_selected(r, iid, kind, sid, "up" in flags, "no-maint" in flags)]
    if "json" in flags:
        return Reply(stats.stat_json(rows) + "\n")
    return Reply(stats.stat_csv(rows))


def _row_selected(row: dict[str, Any], iid: int, kind: int, sid: int, up_only: bool, no_maint: bool) -> bool:
    """HAProxy's filters: proxy id, type mask (1 frontends, 2 backends, 4 servers), server id."""
    typ = int(row.get("type", 0))
    if iid != -1 and row.get("iid") != iid:
        return False
    if kind != -1 and not kind & (1 << typ):
        return False
    if typ == 2:
        if sid != -1 and row.get("sid") != sid:
            return False
        status = str(row.get("status", ""))
        if up_only and (status == MAINT or status.startswith("DOWN")):
            return False
        if no_maint and status == MAINT:
            return False
    return True


SERVERS_STATE_HEADER = (
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health "
    "srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord "
    "srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port"
)

# HAProxy's enum healthcheck_status, by the names lbd's checks report.
CHECK_STATUS_CODES = {
    "UNK": 0, "INI": 1, "SOCKERR": 5, "L4OK": 6, "L4TOUT": 7, "L4CON": 8, "L6OK": 9,
    "L6TOUT": 10, "L6RSP": 11, "L7TOUT": 12, "L7RSP": 13, "L7OK": 15, "L7OKC": 16, "L7STS": 17,
    "PROCERR": 18, "PROCTOUT": 19, "PROCOK": 20,
}
_CHECK_PASSED = ("L4OK", "L6OK", "L7OK", "L7OKC", "PROCOK")
_CHECK_FAILED = ("SOCKERR", "L4TOUT", "L4CON", "L6TOUT", "L6RSP", "L7TOUT", "L7RSP", "L7STS", "PROCERR", "PROCTOUT")


def server_state_line(be: Backend, srv: Server, now: float) -> str:
    """One line of ``show servers state`` (format version 1)."""
    if not srv.up:
        op = 0                                   # SRV_ST_STOPPED
    elif srv.slowstart_until > now:
        op = 1                                   # SRV_ST_STARTING
    else:
        op = 2                                   # SRV_ST_RUNNING
    if srv.maint and srv.cfg.disabled and not srv.added:
        admin = 0x04                             # SRV_ADMF_CMAINT: disabled in the configuration
    elif srv.maint:
        admin = 0x01                             # SRV_ADMF_FMAINT: forced by an operator
    else:
        admin = 0
    if srv.drain:
        admin |= 0x08                            # SRV_ADMF_FDRAIN
    status = srv.check_status.lstrip("* ") if srv.checked else ""
    check_status = CHECK_STATUS_CODES.get(status, 1)
    check_result = 3 if status in _CHECK_PASSED else 2 if status in _CHECK_FAILED else 0
    health_cfg = be.cfg.health
    rise, fall = (health_cfg.rise, health_cfg.fall) if health_cfg is not None else (2, 3)
    health = getattr(srv.checker, "health", None)
    if not isinstance(health, int):
        if not srv.up:
            health = 0
        elif srv.checked and status:
            health = rise + fall - 1
        else:
            health = rise
    check_state = 0
    if srv.checked:
        check_state = 0x02                       # CHK_ST_CONFIGURED
        if not srv.health_disabled:
            check_state |= 0x04                  # CHK_ST_ENABLED
        if srv.maint:
            check_state |= 0x08                  # CHK_ST_PAUSED
    cfg = srv.cfg
    check_port = cfg.check_port or (health_cfg.port if health_cfg is not None and health_cfg.port else 0)
    return " ".join(str(x) for x in (
        be.iid, be.name, srv.sid, srv.name, srv.host, op, admin, srv.uweight, srv.iweight,
        max(int(now - srv.last_change), 0), check_status, check_result, health, check_state,
        0, 0, 0, "-", srv.port, "-", 1 if cfg.tls else 0, check_port,
        cfg.check_address or "-", "-", 0,
    ))


def cmd_show_servers_state(service: LBService, session: Session, args: list[str]) -> Reply:
    pool = service.pool
    name = _arg(args, 3)
    if name is not None:
        be = pool.backends.get(name)
        if be is None:
            for candidate in pool.backends.values():   # HAProxy also takes the numeric id
                if str(candidate.iid) == name:
                    be = candidate
                    break
        if be is None:
            return _err("Can't find backend.")
        backends = [be]
    else:
        backends = list(pool.backends.values())
    now = pool.clock.seconds()
    lines = ["1", SERVERS_STATE_HEADER]
    for be in backends:
        for srv in be.servers.values():
            lines.append(server_state_line(be, srv, now))
    return Reply("\n".join(lines) + "\n")


def cmd_show_backend(service: LBService, session: Session, args: list[str]) -> Reply:
    return Reply("# name\n" + "".join(name + "\n" for name in service.pool.backends))


def cmd_get_weight(service: LBService, session: Session, args: list[str]) -> Reply:
    found = _find_server(service, _arg(args, 2))
    if isinstance(found, Reply):
        return found
    _, srv = found
    return Reply("%d (initial %d)\n" % (srv.uweight, srv.iweight))


# ---------------------------------------------------------------- server state

def cmd_disable_server(service: LBService, session: Session, args: list[str]) -> Reply:
    found = _find_server(service, _arg(args, 2))
    if isinstance(found, Reply):
        return found
    _set_maint(*found)
    _changed(service)
    return OK


def cmd_enable_server(service: LBService, session: Session, args: list[str]) -> Reply:
    found = _find_server(service, _arg(args, 2))
    if isinstance(found, Reply):
        return found
    _set_ready(*found)
    _changed(service)
    return OK


_SET_SERVER_USAGE = "usage: set server <backend>/<server> state | weight"


def cmd_set_server(service: LBService, session: Session, args: list[str]) -> Reply:
    found = _find_server(service, _arg(args, 2))
    if isinstance(found, Reply):
        return found
    be, srv = found
    what = _arg(args, 3)
    if what == "state":
        value = _arg(args, 4)
        action = {"ready": _set_ready, "drain": _set_drain, "maint": _set_maint}.get(value or "")
        if action is None:
            return _err("'set server <srv> state' expects 'ready', 'drain' and 'maint'.")
        action(be, srv)
        _changed(service)
        return OK
    if what == "weight":
        return _apply_weight(service, be, srv, _arg(args, 4))
    return _err(_SET_SERVER_USAGE)


def _apply_weight(service: LBService, be: Backend, srv: Server, value: str | None) -> Reply:
    w = parse_weight(srv, value)
    if isinstance(w, str):
        return _err(w)
    be.set_weight(srv, w)
    _changed(service)
    return OK


def cmd_set_weight(service: LBService, session: Session, args: list[str]) -> Reply:
    found = _find_server(service, _arg(args, 2))
    if isinstance(found, Reply):
        return found
    be, srv = found
    return _apply_weight(service, be, srv, _arg(args, 3))


def cmd_disable_health(service: LBService, session: Session, args: list[str]) -> Reply:
    found = _find_server(service, _arg(args, 2))
    if isinstance(found, Reply):
        return found
    be, srv = found
    if not srv.health_disabled:
        srv.health_disabled = True
        service.stop_checker(srv)
        # As HAProxy: with its check stopped, a server counts as UP.
        be.set_operational(srv, True, "health check disabled by operator")
        _changed(service)
    return OK


def cmd_enable_health(service: LBService, session: Session, args: list[str]) -> Reply:
    found = _find_server(service, _arg(args, 2))
    if isinstance(found, Reply):
        return found
    _, srv = found
    if srv.health_disabled:
        srv.health_disabled = False
        if srv.checked and srv.checker is None:
            service.start_checker(srv)
        _changed(service)
    return OK


def cmd_shutdown_sessions(service: LBService, session: Session, args: list[str]) -> Reply:
    found = _find_server(service, _arg(args, 3))
    if isinstance(found, Reply):
        return found
    _, srv = found
    for sess in list(srv.sessions):
        sess.abort()
    return OK


# ---------------------------------------------------------------- add / del server

def cmd_add_server(service: LBService, session: Session, args: list[str]) -> Reply:
    ref = _arg(args, 2)
    if not ref or "/" not in ref:
        return _err(_NO_SERVER_ARG)
    bname, sname = ref.split("/", 1)
    be = service.pool.backends.get(bname)
    if be is None:
        return _err("No such backend.")
    if not sname or not all(c.isalnum() or c in "_.-" for c in sname):
        return _err("Invalid server name '%s' (letters, digits, '_', '-', '.')." % (sname,))
    if sname in be.servers:
        return _err("Already exists a server with the same name in backend.")
    addr = _arg(args, 3)
    if addr is None:
        return _err("'server' expects <name> and <addr>[:<port>] as arguments.")
    try:
        host, port = _config.parse_address(addr)
    except ValueError as e:
        return _err("Invalid address: %s." % (e,))
    opts: dict[str, Any] = {"disabled": True}     # as HAProxy: in maintenance until enabled
    rest = args[4:]
    i = 0
    while i < len(rest):
        word = rest[i]
        if word == "weight":
            value = _arg(rest, i + 1)
            if value is None or not value.lstrip("-").isdigit():
                return _err("'weight' expects an integer argument.")
            w = int(value)
            if not 0 <= w <= _config.MAX_WEIGHT:
                return _err("weight of server %s is not within 0 and %d (%d)." % (sname, _config.MAX_WEIGHT, w))
            opts["weight"] = w
            i += 2
        elif word in ("backup", "check"):
            opts[word] = True
            i += 1
        else:
            return _err("unknown keyword '%s'; expected 'weight <w>', 'backup' or 'check'." % (word,))
    if opts.get("check") and be.cfg.health is None:
        return _err("'check' needs health checks configured for backend %s ([backends.%s.health])." % (bname, bname))
    opts.setdefault("check", False)
    checker = _config._Checker("add server", {})
    scfg = _config.build_server(checker, sname, host, port, opts, ("backends", bname, "servers", sname))
    if checker.errors:
        return _err("\n".join(text for _, text in checker.errors))
    srv = be.add_server(scfg)
    srv.added = True
    deleted = getattr(service, "deleted_servers", None)
    if deleted is not None:
        deleted.discard((bname, sname))
    if srv.checked:
        service.start_checker(srv)
    _changed(service)
    return _info("New server registered.")


def cmd_del_server(service: LBService, session: Session, args: list[str]) -> Reply:
    found = _find_server(service, _arg(args, 2))
    if isinstance(found, Reply):
        return found
    be, srv = found
    if not srv.maint:
        return _err("Only servers in maintenance mode can be deleted.")
    if srv.sessions or srv.cur_sess or srv.queue:
        return _err("Server still has connections attached to it, cannot remove it.")
    be.remove_server(srv.name)
    if not srv.added:
        deleted = getattr(service, "deleted_servers", None)
        if deleted is not None:
            deleted.add((be.name, srv.name))
    _changed(service)
    return _info("Server deleted.")


# ---------------------------------------------------------------- admin

def cmd_reload(service: LBService, session: Session, args: list[str]) -> Reply:
    errors = service.reload()
    if errors:
        return _err("Success=0\n" + "".join(e + "\n" for e in errors))
    return _info("Success=1")


def _parse_int(value: str | None) -> int | None:
    if value is None or not value.lstrip("-").isdigit():
        return None
    return int(value)


def cmd_set_maxconn_frontend(service: LBService, session: Session, args: list[str]) -> Reply:
    name = _arg(args, 3)
    if name is None:
        return _err("A frontend name is expected.")
    fe = service.pool.frontends.get(name)
    if fe is None:
        return _err("No such frontend.")
    value = _arg(args, 4)
    if value is None:
        return _err("Integer value expected.")
    v = _parse_int(value)
    if v is None:
        return _err("Integer value expected.")
    if v < 0 or v > 10_000_000:
        return _err("Value out of range.")
    fe.maxconn = v or fe.cfg.maxconn          # 0 restores the configured value
    return OK


def cmd_set_maxconn_global(service: LBService, session: Session, args: list[str]) -> Reply:
    v = _parse_int(_arg(args, 3))
    if v is None:
        return _err("Expects an integer value.")
    if v < 0 or v > 10_000_000:
        return _err("Value out of range.")
    service.pool.maxconn = v or service.config.global_.maxconn   # 0 restores the configured value
    return OK


# ---------------------------------------------------------------- the table

COMMANDS: tuple[Command, ...] = (
    Command(("add", "server"), "admin", cmd_add_server,
            "add server <bk>/<srv> <addr>:<port> ...",
            "create a server, in maintenance until enabled ([weight <w>] [backup] [check])"),
    Command(("del", "server"), "admin", cmd_del_server,
            "del server <bk>/<srv>", "remove a server in maintenance with no connection"),
    Command(("disable", "health"), "operator", cmd_disable_health,
            "disable health <bk>/<srv>", "disable health checks (the server counts as up)"),
    Command(("disable", "server"), "operator", cmd_disable_server,
            "disable server <bk>/<srv>", "put a server in maintenance (as set server ... state maint)"),
    Command(("enable", "health"), "operator", cmd_enable_health,
            "enable health <bk>/<srv>", "enable health checks"),
    Command(("enable", "server"), "operator", cmd_enable_server,
            "enable server <bk>/<srv>", "take a server out of maintenance or drain"),
    Command(("get", "weight"), "user", cmd_get_weight,
            "get weight <bk>/<srv>", "report a server's current weight"),
    Command(("operator",), "operator", cmd_lower_level,
            "operator", "lower the level of the current CLI session to operator"),
    Command(("reload",), "admin", cmd_reload,
            "reload", "re-read the configuration file and apply the changes"),
    Command(("set", "maxconn", "frontend"), "admin", cmd_set_maxconn_frontend,
            "set maxconn frontend <frontend> <value>", "change a frontend's maxconn setting"),
    Command(("set", "maxconn", "global"), "admin", cmd_set_maxconn_global,
            "set maxconn global <value>", "change the per-process maxconn setting"),
    Command(("set", "server"), "operator", cmd_set_server,
            "set server <bk>/<srv> [opts]", "change a server's state (ready|drain|maint) or weight"),
    Command(("set", "severity-output"), "user", cmd_severity_output,
            "set severity-output [none|number|string]", "set presence of severity level in feedback information"),
    Command(("set", "timeout"), "user", cmd_set_timeout,
            "set timeout cli <delay>", "change this session's idle timeout"),
    Command(("set", "weight"), "operator", cmd_set_weight,
            "set weight <bk>/<srv> <w>[%]", "change a server's weight"),
    Command(("show", "backend"), "user", cmd_show_backend,
            "show backend", "list backends in the current running config"),
    Command(("show", "cli", "level"), "user", cmd_show_cli_level,
            "show cli level", "display the level of the current CLI session"),
    Command(("show", "info"), "user", cmd_show_info,
            "show info [json]", "report information about the running process"),
    Command(("show", "servers", "state"), "user", cmd_show_servers_state,
            "show servers state [<backend>]", "dump volatile server information (all or for a single backend)"),
    Command(("show", "stat"), "user", cmd_show_stat,
            "show stat [json|up|no-maint]*", "report counters for each proxy and server"),
    Command(("shutdown", "sessions", "server"), "operator", cmd_shutdown_sessions,
            "shutdown sessions server <bk>/<srv>", "kill sessions on a server"),
    Command(("user",), "user", cmd_lower_level,
            "user", "lower the level of the current CLI session to user"),
    # Always listed last, as HAProxy does.
    Command(("help",), "user", cmd_help, "help [<command>]", "list matching or all commands"),
    Command(("prompt",), "user", cmd_prompt, "prompt", "toggle interactive mode with prompt"),
    Command(("quit",), "user", cmd_quit, "quit", "disconnect"),
)

_TRAILER = ("help", "prompt", "quit")


def help_lines(level: str, match: list[str] | None = None) -> list[str]:
    """The commands a session at ``level`` may run, HAProxy's layout; ``match`` filters by leading words."""
    out = []
    for cmd in COMMANDS:
        if rank(cmd.level) > rank(level):
            continue
        if cmd.words[0] not in _TRAILER and match:
            n = min(len(match), len(cmd.words))
            if list(cmd.words[:n]) != match[:n]:
                continue
        out.append("  %-40s: %s" % (cmd.usage, cmd.help))
    return out


def help_text(level: str, match: list[str] | None = None) -> str:
    return "The following commands are valid at this level:\n" + "".join(
        line + "\n" for line in help_lines(level, match))


def unknown_text(level: str) -> str:
    return "Unknown command. Please enter one of the following commands only:\n" + "".join(
        line + "\n" for line in help_lines(level))


def find(args: list[str]) -> Command | None:
    """The command whose words start ``args``, the longest match winning."""
    best = None
    for cmd in COMMANDS:
        n = len(cmd.words)
        if tuple(args[:n]) == cmd.words and (best is None or n > len(best.words)):
            best = cmd
    return best


def run(service: LBService, session: Session, args: list[str]) -> Reply:
    """Run one command (its words) for ``session``: level check, then the handler."""
    cmd = find(args)
    if cmd is None:
        return _err(unknown_text(session.level))
    if rank(cmd.level) > rank(session.level):
        return _err("Permission denied")
    return cmd.handler(service, session, args)


def split_commands(line: str) -> list[list[str]]:
    """A line to commands (split on ``;``) of words (split on blanks); ``\\`` escapes the next character."""
    commands: list[list[str]] = []
    words: list[str] = []
    word: list[str] = []
    in_word = False
    i = 0
    n = len(line)
    while i < n:
        c = line[i]
        if c == "\\" and i + 1 < n:
            word.append(line[i + 1])
            in_word = True
            i += 2
            continue
        if c == ";":
            if in_word:
                words.append("".join(word))
            commands.append(words)
            words, word, in_word = [], [], False
        elif c in " \t":
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
        else:
            word.append(c)
            in_word = True
        i += 1
    if in_word:
        words.append("".join(word))
    commands.append(words)
    return commands


def execute(service: LBService, line: str, session: Session | None = None) -> list[Reply]:
    """Run every command of one line, in order; stops after ``quit``."""
    session = session if session is not None else Session()
    replies = []
    for args in split_commands(line):
        if not args:
            if session.prompt and line.strip() == "":
                continue                      # an empty line at the prompt: just a new prompt
            replies.append(_err(unknown_text(session.level)))
            continue
        replies.append(run(service, session, args))
        if session.closing:
            break
    return replies


def render(reply: Reply, severity_output: str = "none") -> str:
    """A reply as written on the socket: its lines, then the empty line that ends every answer."""
    text = reply.text
    if text and not text.endswith("\n"):
        text += "\n"
    if text and reply.severity is not None and severity_output != "none":
        if severity_output == "number":
            text = "[%d]: %s" % (reply.severity, text)
        else:
            text = "[%s]: %s" % (SEVERITY_NAMES[reply.severity], text)
    return text + "\n"
