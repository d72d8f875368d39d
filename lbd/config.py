"""TOML configuration to frozen objects, with strict validation.

No Twisted here: ``lbd check`` validates without a reactor. Every problem is
collected and reported at once as ``FILE:LINE: key.path: message``. Durations
become float seconds and sizes int bytes, once, here.
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_PATH = "/etc/lbd.toml"

MODES = ("http", "tcp")
BALANCES = ("roundrobin", "static-rr", "leastconn", "first", "source", "random")
CHECK_TYPES = ("tcp", "http", "mysql", "galera")
LOG_LEVELS = ("debug", "info", "warn", "error")
LOG_FORMATS = ("haproxy", "json")
ADMIN_LEVELS = ("user", "operator", "admin")
ERROR_CODES = (400, 403, 408, 413, 414, 421, 425, 429, 431, 500, 501, 502, 503, 504, 505)
ENDPOINT_TYPES = ("tcp", "tcp6", "ssl", "unix", "systemd", "tls")
MAX_WEIGHT = 256


class ConfigError(Exception):
    """Raised with every problem found; ``errors`` are formatted lines."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


# ---------------------------------------------------------------- values


@dataclass(frozen=True)
class Timeouts:
    """Every timeout in float seconds."""

    connect: float = 5.0
    server: float = 30.0
    client: float = 30.0
    http_request: float = 10.0
    keep_alive: float = 5.0
    queue: float = 5.0
    tunnel: float = 3600.0
    check: float = 2.0


@dataclass(frozen=True)
class HealthConfig:
    type: str = "tcp"
    interval: float = 2.0
    fastinter: float = 2.0
    downinter: float = 2.0
    rise: int = 2
    fall: int = 3
    port: int | None = None
    method: str = "GET"
    path: str = "/"
    host: str | None = None
    expect_status: tuple[int, int] = (200, 399)
    expect_body: str | None = None
    user: str | None = None
    password: str = ""
    allow_donor: bool = False


@dataclass(frozen=True)
class ServerConfig:
    name: str
    host: str
    port: int
    weight: int = 1
    check: bool = True
    check_address: str | None = None
    check_port: int | None = None
    backup: bool = False
    maxconn: int = 0
    disabled: bool = False
    slowstart: float = 0.0
    send_proxy: str | None = None
    tls: bool = False
    tls_verify: bool = True
    tls_sni: str | None = None
    tls_ca: str | None = None

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)


@dataclass(frozen=True)
class BackendConfig:
    name: str
    mode: str = "http"
    balance: str = "roundrobin"
    retries: int = 3
    redispatch: bool = True
    forwardfor: bool = True
    max_header_size: int = 16384
    timeouts: Timeouts = Timeouts()
    errorfiles: Mapping[int, bytes] = field(default_factory=dict)
    health: HealthConfig | None = None
    servers: tuple[ServerConfig, ...] = ()


@dataclass(frozen=True)
class RouteConfig:
    backend: str
    host: str | None = None
    path_prefix: str | None = None
    path_regex: re.Pattern[bytes] | None = None
    methods: tuple[bytes, ...] = ()
    headers: tuple[tuple[bytes, bytes], ...] = ()


@dataclass(frozen=True)
class FrontendConfig:
    name: str
    binds: tuple[str, ...]
    mode: str = "http"
    default_backend: str | None = None
    routes: tuple[RouteConfig, ...] = ()
    maxconn: int = 2000
    forwardfor: bool = True
    max_header_size: int = 16384
    timeouts: Timeouts = Timeouts()
    errorfiles: Mapping[int, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class GlobalConfig:
    maxconn: int = 4096
    grace: float = 10.0
    state_file: str | None = None
    fastpath: bool = True      # lbd.fastpath's reactor/transport shortcuts (see there)


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    access: str = "-"
    format: str = "haproxy"


@dataclass(frozen=True)
class AdminConfig:
    socket: str | None = "/run/lbd/admin.sock"
    mode: int = 0o660
    level: str = "admin"


@dataclass(frozen=True)
class MetricsConfig:
    bind: str | None = "127.0.0.1:9101"
    prefix: str = "lbd"


@dataclass(frozen=True)
class Config:
    path: str
    global_: GlobalConfig
    log: LogConfig
    admin: AdminConfig
    metrics: MetricsConfig
    frontends: Mapping[str, FrontendConfig]
    backends: Mapping[str, BackendConfig]


# ---------------------------------------------------------------- units

_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|m|h|d)?\s*$")
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmg]?)b?\s*$", re.IGNORECASE)


def parse_duration(value: object) -> float:
    """Seconds from an int (milliseconds, as HAProxy) or a string with a unit."""
    if isinstance(value, bool):
        raise ValueError("expected a duration (integer milliseconds or a string like \"2s\")")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return value / 1000.0
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m is None:
            raise ValueError(
                "%r is not a duration (use milliseconds or a unit: us, ms, s, m, h, d)" % (value,)
            )
        return float(m.group(1)) * _DURATION_UNITS[m.group(2) or "ms"]
    raise ValueError("expected a duration (integer milliseconds or a string like \"2s\")")


def parse_size(value: object) -> int:
    """Bytes from an int or a string such as "16k"."""
    if isinstance(value, bool):
        raise ValueError("expected a size (integer bytes or a string like \"16k\")")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m is None:
            raise ValueError("%r is not a size (use bytes or a unit: k, m, g)" % (value,))
        return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
    raise ValueError("expected a size (integer bytes or a string like \"16k\")")


def format_address(host: str, port: int) -> str:
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def parse_address(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` to a pair; raises ValueError."""
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or value[end + 1 : end + 2] != ":":
            raise ValueError("%r is not ADDRESS:PORT" % (value,))
        host, port_s = value[1:end], value[end + 2 :]
    else:
        host, sep, port_s = value.rpartition(":")
        if not sep or ":" in host:
            raise ValueError("%r is not ADDRESS:PORT" % (value,))
    if not host:
        raise ValueError("%r has no address" % (value,))
    if not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ValueError("%r has no valid port (1-65535)" % (value,))
    return host, int(port_s)


def bind_to_endpoint(value: str) -> str:
    """A ``bind`` entry to a Twisted server endpoint description.

    ``*:80`` listens on every IPv4 address, ``[::]:80`` on IPv6, ``ADDR:PORT``
    on one address; strings starting with a known endpoint type pass through.
    """
    kind = value.split(":", 1)[0]
    if kind in ENDPOINT_TYPES:
        return value
    if value.startswith("*:") or value.startswith(":"):
        port_s = value.split(":", 1)[1]
        if not port_s.isdigit() or not 0 <= int(port_s) < 65536:
            raise ValueError("%r has no valid port" % (value,))
        return "tcp:%d:interface=0.0.0.0" % int(port_s)
    host, port = parse_address(value)
    if ":" in host:
        return "tcp6:%d:interface=%s" % (port, host.replace(":", "\\:"))
    return "tcp:%d:interface=%s" % (port, host)


# ---------------------------------------------------------------- line numbers

_KEY_RE = re.compile(r'\s*((?:[A-Za-z0-9_-]+|"[^"]*"|\'[^\']*\')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|\'[^\']*\'))*)\s*=')
_TABLE_RE = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?")
_INLINE_KEY_RE = re.compile(r'[{,]\s*([A-Za-z0-9_-]+|"[^"]*")\s*=')


def _split_key(key: str) -> list[str]:
    parts = re.findall(r'"([^"]*)"|\'([^\']*)\'|([A-Za-z0-9_-]+)', key)
    return [a or b or c for a, b, c in parts]


def locate_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map key paths to the line (1-based) where they are written.

    A light scanner, not a TOML parser: enough for error messages. Arrays of
    tables get their index in the path, like the values ``tomllib`` returns.
    """
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    aot_count: dict[tuple[str, ...], int] = {}
    in_multiline: str | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        if in_multiline is not None:
            if in_multiline in line:
                in_multiline = None
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = _TABLE_RE.match(line)
        if m and not _KEY_RE.match(line):
            path = tuple(_split_key(m.group(2)))
            if m.group(1) == "[[":
                idx = aot_count.get(path, 0)
                aot_count[path] = idx + 1
                table = path + (str(idx),)
            else:
                table = path
            lines.setdefault(table, lineno)
            # every prefix of the table starts here at the latest
            for i in range(1, len(path)):
                lines.setdefault(path[:i], lineno)
            continue
        m = _KEY_RE.match(line)
        if m:
            key = table + tuple(_split_key(m.group(1)))
            lines.setdefault(key, lineno)
            rest = line[m.end():]
            for im in _INLINE_KEY_RE.finditer(rest):
                lines.setdefault(key + tuple(_split_key(im.group(1))), lineno)
            for quote in ('"""', "'''"):
                if rest.count(quote) == 1:
                    in_multiline = quote
    return lines


# ---------------------------------------------------------------- validation

_MISSING = object()


class _Checker:
    """Collects errors with their key path and line."""

    def __init__(self, path: str, lines: dict[tuple[str, ...], int]) -> None:
        self.path = path
        self.lines = lines
        self.errors: list[tuple[int, str]] = []

    def error(self, keypath: tuple[str, ...], message: str) -> None:
        line = 0
        for i in range(len(keypath), 0, -1):
            found = self.lines.get(keypath[:i])
            if found is not None:
                line = found
                break
        dotted = ".".join(keypath)
        if line:
            text = "%s:%d: %s: %s" % (self.path, line, dotted, message)
        else:
            text = "%s: %s: %s" % (self.path, dotted, message)
        self.errors.append((line, text))

    def table(self, data: object, keypath: tuple[str, ...]) -> dict[str, Any]:
        if data is _MISSING or data is None:
            return {}
        if not isinstance(data, dict):
            self.error(keypath, "expected a table")
            return {}
        return data

    def unknown(self, data: Mapping[str, Any], allowed: Iterable[str], keypath: tuple[str, ...]) -> None:
        allowed_set = set(allowed)
        for key in data:
            if key not in allowed_set:
                self.error(keypath + (key,), "unknown key (expected one of: %s)" % ", ".join(sorted(allowed_set)))

    def get(
        self,
        data: Mapping[str, Any],
        key: str,
        keypath: tuple[str, ...],
        convert: Callable[[Any], Any],
        default: Any,
    ) -> Any:
        if key not in data:
            return default
        try:
            return convert(data[key])
        except (ValueError, TypeError) as e:
            self.error(keypath + (key,), str(e))
            return default


def _int(lo: int | None = None, hi: int | None = None) -> Callable[[Any], int]:
    def convert(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError("expected an integer, got %s" % _describe(v))
        if lo is not None and v < lo:
            raise ValueError("%d is below %d" % (v, lo))
        if hi is not None and v > hi:
            raise ValueError("%d is above %d" % (v, hi))
        return v

    return convert


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("expected true or false, got %s" % _describe(v))
    return v


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError("expected a string, got %s" % _describe(v))
    return v


def _nonempty_str(v: Any) -> str:
    s = _str(v)
    if not s:
        raise ValueError("must not be empty")
    return s


def _choice(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def convert(v: Any) -> str:
        s = _str(v)
        if s not in choices:
            raise ValueError("%r is not one of: %s" % (s, ", ".join(choices)))
        return s

    return convert


def _port(v: Any) -> int:
    return _int(1, 65535)(v)


def _duration(v: Any) -> float:
    return parse_duration(v)


def _positive_duration(v: Any) -> float:
    d = parse_duration(v)
    if d <= 0:
        raise ValueError("must be greater than zero")
    return d


def _describe(v: Any) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a float"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "a table"
    return type(v).__name__


_TIMEOUT_KEYS = tuple(Timeouts.__dataclass_fields__)
_PROXY_COMMON = ("mode", "retries", "redispatch", "forwardfor", "maxconn", "max_header_size", "timeout", "errorfiles")
_DEFAULTS_KEYS = _PROXY_COMMON
_FRONTEND_KEYS = ("bind", "mode", "default_backend", "routes", "maxconn", "forwardfor", "max_header_size", "timeout", "errorfiles")
_BACKEND_KEYS = ("mode", "balance", "retries", "redispatch", "forwardfor", "max_header_size", "timeout", "errorfiles", "health", "servers")
_SERVER_KEYS = tuple(f for f in ServerConfig.__dataclass_fields__ if f not in ("name", "host", "port")) + ("address",)
_HEALTH_KEYS = tuple(f for f in HealthConfig.__dataclass_fields__)
_ROUTE_KEYS = ("backend", "host", "path_prefix", "path_regex", "method", "header")
_TOKEN_CHARS = set(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _status_range(v: Any) -> tuple[int, int]:
    if isinstance(v, int) and not isinstance(v, bool):
        lo = hi = v
    elif isinstance(v, str):
        lo_s, sep, hi_s = v.partition("-")
        if not lo_s.strip().isdigit() or (sep and not hi_s.strip().isdigit()):
            raise ValueError("%r is not a status or a range like \"200-399\"" % (v,))
        lo = int(lo_s)
        hi = int(hi_s) if sep else lo
    else:
        raise ValueError("expected a status code or a range like \"200-399\"")
    if not (100 <= lo <= hi <= 599):
        raise ValueError("%r is not a range of HTTP status codes (100-599)" % (v,))
    return (lo, hi)


def _http_method(v: Any) -> bytes:
    s = _nonempty_str(v)
    b = s.encode("ascii", "replace")
    if not all(c in _TOKEN_CHARS for c in b):
        raise ValueError("%r is not a valid HTTP method" % (s,))
    return b


def _read_errorfile(path: str) -> bytes:
    """A raw HTTP response: status line, headers, blank line, body."""
    try:
        with open(path, "rb") as f:
            data = f.read(1024 * 1024 + 1)
    except OSError as e:
        raise ValueError("cannot read %s: %s" % (path, e.strerror or e))
    if len(data) > 1024 * 1024:
        raise ValueError("%s is larger than 1 MiB" % (path,))
    return normalise_errorfile(data, path)


def normalise_errorfile(data: bytes, path: str = "errorfile") -> bytes:
    """Check an errorfile and give it CRLF line ends in its head.

    Hand-written files often have LF line ends; lbd must still send a valid
    response, so the head is rewritten with CRLF and a Content-Length matching
    the body is set, as clients would otherwise wait for the close.
    """
    sep = data.find(b"\r\n\r\n")
    if sep >= 0:
        head, body = data[:sep], data[sep + 4 :]
    else:
        sep = data.find(b"\n\n")
        if sep < 0:
            raise ValueError("%s has no blank line after its headers" % (path,))
        head, body = data[:sep], data[sep + 2 :]
    head_lines = [line.rstrip(b"\r") for line in head.split(b"\n")]
    status = head_lines[0].split(b" ", 2)
    if len(status) < 2 or status[0] not in (b"HTTP/1.0", b"HTTP/1.1") or not status[1].isdigit() or len(status[1]) != 3:
        raise ValueError("%s does not start with an HTTP status line (e.g. \"HTTP/1.1 503 Service Unavailable\")" % (path,))
    out = [head_lines[0]]
    for line in head_lines[1:]:
        name, colon, _ = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise ValueError("%s has an invalid header line %r" % (path, line.decode("latin-1")))
        if name.lower() in (b"content-length", b"transfer-encoding"):
            continue
        out.append(line)
    out.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(out) + b"\r\n\r\n" + body


# ---------------------------------------------------------------- the loader


def load(path: str) -> Config:
    """Read and validate ``path``; raise ConfigError listing every problem."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(["%s: cannot read the configuration: %s" % (path, e.strerror or e)])
    return loads(raw, path)


def loads(raw: bytes | str, path: str = "<config>") -> Config:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = re.search(r"\(at line (\d+), column \d+\)", msg)
        if m:
            raise ConfigError(["%s:%s: not valid TOML: %s" % (path, m.group(1), msg[: m.start()].strip())])
        raise ConfigError(["%s: not valid TOML: %s" % (path, msg)])
    checker = _Checker(path, locate_lines(text))
    config = _build(data, checker, os.path.dirname(os.path.abspath(path)) if path != "<config>" else os.getcwd())
    if checker.errors:
        checker.errors.sort(key=lambda e: e[0])
        raise ConfigError([text for _, text in checker.errors])
    assert config is not None
    return config


def _build(data: dict[str, Any], c: _Checker, base_dir: str) -> Config | None:
    c.unknown(data, ("global", "log", "admin", "metrics", "defaults", "frontends", "backends"), ())

    g = c.table(data.get("global", _MISSING), ("global",))
    c.unknown(g, ("maxconn", "grace", "state_file", "fastpath"), ("global",))
    global_ = GlobalConfig(
        maxconn=c.get(g, "maxconn", ("global",), _int(1, 10_000_000), 4096),
        grace=c.get(g, "grace", ("global",), _duration, 10.0),
        state_file=c.get(g, "state_file", ("global",), _nonempty_str, None),
        fastpath=c.get(g, "fastpath", ("global",), _bool, True),
    )

    lg = c.table(data.get("log", _MISSING), ("log",))
    c.unknown(lg, ("level", "access", "format"), ("log",))
    log = LogConfig(
        level=c.get(lg, "level", ("log",), _choice(LOG_LEVELS), "info"),
        access=c.get(lg, "access", ("log",), _nonempty_str, "-"),
        format=c.get(lg, "format", ("log",), _choice(LOG_FORMATS), "haproxy"),
    )

    ad = c.table(data.get("admin", _MISSING), ("admin",))
    c.unknown(ad, ("socket", "mode", "level"), ("admin",))

    def _mode(v: Any) -> int:
        s = _str(v)
        if not s or any(ch not in "01234567" for ch in s) or len(s) > 4:
            raise ValueError("%r is not an octal file mode such as \"660\"" % (s,))
        return int(s, 8)

    def _socket(v: Any) -> str | None:
        s = _str(v)
        if s in ("", "off"):
            return None
        return s

    admin = AdminConfig(
        socket=c.get(ad, "socket", ("admin",), _socket, "/run/lbd/admin.sock"),
        mode=c.get(ad, "mode", ("admin",), _mode, 0o660),
        level=c.get(ad, "level", ("admin",), _choice(ADMIN_LEVELS), "admin"),
    )

    mt = c.table(data.get("metrics", _MISSING), ("metrics",))
    c.unknown(mt, ("bind", "prefix"), ("metrics",))

    def _prefix(v: Any) -> str:
        s = _nonempty_str(v)
        if not re.match(r"^[a-zA-Z_][a-zA-Z0-9_]*$", s):
            raise ValueError("%r is not a valid Prometheus metric name prefix" % (s,))
        return s

    def _metrics_bind(v: Any) -> str | None:
        s = _str(v)
        if s in ("", "off"):
            return None
        bind_to_endpoint(s)
        return s

    metrics = MetricsConfig(
        bind=c.get(mt, "bind", ("metrics",), _metrics_bind, "127.0.0.1:9101"),
        prefix=c.get(mt, "prefix", ("metrics",), _prefix, "lbd"),
    )

    # defaults
    df = c.table(data.get("defaults", _MISSING), ("defaults",))
    c.unknown(df, _DEFAULTS_KEYS, ("defaults",))
    d_mode = c.get(df, "mode", ("defaults",), _choice(MODES), "http")
    d_retries = c.get(df, "retries", ("defaults",), _int(0, 100), 3)
    d_redispatch = c.get(df, "redispatch", ("defaults",), _bool, True)
    d_forwardfor = c.get(df, "forwardfor", ("defaults",), _bool, True)
    d_maxconn = c.get(df, "maxconn", ("defaults",), _int(1, 10_000_000), 2000)
    d_mhs = c.get(df, "max_header_size", ("defaults",), _header_size, 16384)
    d_timeouts = _timeouts(c, df.get("timeout", _MISSING), ("defaults", "timeout"), Timeouts())
    d_errorfiles = _errorfiles(c, df.get("errorfiles", _MISSING), ("defaults", "errorfiles"), {}, base_dir)

    # backends first: frontends refer to them
    backends: dict[str, BackendConfig] = {}
    bes = c.table(data.get("backends", _MISSING), ("backends",))
    for name, be in bes.items():
        kp = ("backends", name)
        if not _valid_name(name):
            c.error(kp, "%r is not a valid name (letters, digits, '_', '-', '.')" % (name,))
        be = c.table(be, kp)
        c.unknown(be, _BACKEND_KEYS, kp)
        mode = c.get(be, "mode", kp, _choice(MODES), d_mode)
        timeouts = _timeouts(c, be.get("timeout", _MISSING), kp + ("timeout",), d_timeouts)
        health = _health(c, be.get("health", _MISSING), kp + ("health",), mode)
        servers = _servers(c, be.get("servers", _MISSING), kp + ("servers",))
        backends[name] = BackendConfig(
            name=name,
            mode=mode,
            balance=c.get(be, "balance", kp, _choice(BALANCES), "roundrobin"),
            retries=c.get(be, "retries", kp, _int(0, 100), d_retries),
            redispatch=c.get(be, "redispatch", kp, _bool, d_redispatch),
            forwardfor=c.get(be, "forwardfor", kp, _bool, d_forwardfor),
            max_header_size=c.get(be, "max_header_size", kp, _header_size, d_mhs),
            timeouts=timeouts,
            errorfiles=_errorfiles(c, be.get("errorfiles", _MISSING), kp + ("errorfiles",), d_errorfiles, base_dir),
            health=health,
            servers=servers,
        )

    frontends: dict[str, FrontendConfig] = {}
    seen_binds: dict[str, tuple[str, ...]] = {}
    if metrics.bind is not None:
        seen_binds[_bind_key(metrics.bind)] = ("metrics", "bind")
    fes = c.table(data.get("frontends", _MISSING), ("frontends",))
    for name, fe in fes.items():
        kp = ("frontends", name)
        if not _valid_name(name):
            c.error(kp, "%r is not a valid name (letters, digits, '_', '-', '.')" % (name,))
        fe = c.table(fe, kp)
        c.unknown(fe, _FRONTEND_KEYS, kp)
        mode = c.get(fe, "mode", kp, _choice(MODES), d_mode)
        binds = _binds(c, fe.get("bind", _MISSING), kp + ("bind",), seen_binds)
        default_backend = c.get(fe, "default_backend", kp, _nonempty_str, None)
        if default_backend is not None:
            _check_backend_ref(c, default_backend, backends, kp + ("default_backend",), mode)
        routes = _routes(c, fe.get("routes", _MISSING), kp + ("routes",), backends, mode)
        frontends[name] = FrontendConfig(
            name=name,
            binds=binds,
            mode=mode,
            default_backend=default_backend,
            routes=routes,
            maxconn=c.get(fe, "maxconn", kp, _int(1, 10_000_000), d_maxconn),
            forwardfor=c.get(fe, "forwardfor", kp, _bool, d_forwardfor),
            max_header_size=c.get(fe, "max_header_size", kp, _header_size, d_mhs),
            timeouts=_timeouts(c, fe.get("timeout", _MISSING), kp + ("timeout",), d_timeouts),
            errorfiles=_errorfiles(c, fe.get("errorfiles", _MISSING), kp + ("errorfiles",), d_errorfiles, base_dir),
        )

    if c.errors:
        return None
    return Config(
        path=c.path,
        global_=global_,
        log=log,
        admin=admin,
        metrics=metrics,
        frontends=frontends,
        backends=backends,
    )


def _valid_name(name: str) -> bool:
    return bool(re.match(r"^[A-Za-z0-9_.-]+$", name))


def _header_size(v: Any) -> int:
    n = parse_size(v)
    if not 1024 <= n <= 1024 * 1024:
        raise ValueError("%d is outside 1k-1m" % (n,))
    return n


def _bind_key(bind: str) -> str:
    try:
        return bind_to_endpoint(bind)
    except ValueError:
        return bind


def _binds(c: _Checker, v: object, kp: tuple[str, ...], seen: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    if v is _MISSING:
        c.error(kp, "a frontend needs at least one bind address")
        return ()
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not items:
        c.error(kp, "expected a string or a non-empty array of strings")
        return ()
    out: list[str] = []
    for i, b in enumerate(items):
        if not isinstance(b, str):
            c.error(kp, "entry %d: expected a string, got %s" % (i, _describe(b)))
            continue
        try:
            key = bind_to_endpoint(b)
        except ValueError as e:
            c.error(kp, str(e))
            continue
        if key in seen:
            c.error(kp, "%r is already bound by %s" % (b, ".".join(seen[key])))
            continue
        seen[key] = kp
        out.append(b)
    return tuple(out)


def _check_backend_ref(c: _Checker, name: str, backends: Mapping[str, BackendConfig], kp: tuple[str, ...], mode: str) -> None:
    be = backends.get(name)
    if be is None:
        c.error(kp, "no backend named %r" % (name,))
    elif be.mode != mode:
        c.error(kp, "backend %r is in %s mode but this frontend is in %s mode" % (name, be.mode, mode))


def _timeouts(c: _Checker, v: object, kp: tuple[str, ...], base: Timeouts) -> Timeouts:
    t = c.table(v, kp)
    c.unknown(t, _TIMEOUT_KEYS, kp)
    values = {}
    for key in _TIMEOUT_KEYS:
        values[key] = c.get(t, key, kp, _positive_duration, getattr(base, key))
    return Timeouts(**values)


def _errorfiles(c: _Checker, v: object, kp: tuple[str, ...], base: Mapping[int, bytes], base_dir: str) -> Mapping[int, bytes]:
    t = c.table(v, kp)
    out = dict(base)
    for code_s, path in t.items():
        if not code_s.isdigit() or int(code_s) not in ERROR_CODES:
            c.error(kp + (code_s,), "lbd generates no %s responses (one of: %s)" % (code_s, ", ".join(map(str, ERROR_CODES))))
            continue
        if not isinstance(path, str) or not path:
            c.error(kp + (code_s,), "expected the path of a file")
            continue
        full = path if os.path.isabs(path) else os.path.join(base_dir, path)
        try:
            out[int(code_s)] = _read_errorfile(full)
        except ValueError as e:
            c.error(kp + (code_s,), str(e))
    return out


def _health(c: _Checker, v: object, kp: tuple[str, ...], mode: str) -> HealthConfig | None:
    if v is _MISSING:
        return None
    h = c.table(v, kp)
    c.unknown(h, _HEALTH_KEYS, kp)
    ctype = c.get(h, "type", kp, _choice(CHECK_TYPES), "tcp")
    interval = c.get(h, "interval", kp, _positive_duration, 2.0)
    cfg = HealthConfig(
        type=ctype,
        interval=interval,
        fastinter=c.get(h, "fastinter", kp, _positive_duration, interval),
        downinter=c.get(h, "downinter", kp, _positive_duration, interval),
        rise=c.get(h, "rise", kp, _int(1, 1000), 2),
        fall=c.get(h, "fall", kp, _int(1, 1000), 3),
        port=c.get(h, "port", kp, _port, None),
        method=c.get(h, "method", kp, lambda x: _http_method(x).decode(), "GET"),
        path=c.get(h, "path", kp, _path, "/"),
        host=c.get(h, "host", kp, _nonempty_str, None),
        expect_status=c.get(h, "expect_status", kp, _status_range, (200, 399)),
        expect_body=c.get(h, "expect_body", kp, _nonempty_str, None),
        user=c.get(h, "user", kp, _nonempty_str, None),
        password=c.get(h, "password", kp, _str, ""),
        allow_donor=c.get(h, "allow_donor", kp, _bool, False),
    )
    http_only = ("method", "path", "host", "expect_status", "expect_body")
    mysql_only = ("user", "password", "allow_donor")
    for key in http_only:
        if key in h and ctype != "http":
            c.error(kp + (key,), "only applies to type = \"http\" checks")
    for key in mysql_only:
        if key in h and ctype not in ("mysql", "galera") and not (key == "allow_donor" and ctype == "galera"):
            c.error(kp + (key,), "only applies to type = \"mysql\" or \"galera\" checks")
    if "allow_donor" in h and ctype != "galera":
        if ctype in ("mysql",):
            c.error(kp + ("allow_donor",), "only applies to type = \"galera\" checks")
    if ctype == "galera" and cfg.user is None:
        c.error(kp + ("user",), "a galera check needs a user to log in with")
    return cfg


def _path(v: Any) -> str:
    s = _nonempty_str(v)
    if not s.startswith("/") or any(ch in s for ch in " \r\n\t\0"):
        raise ValueError("%r is not an absolute HTTP path without spaces" % (s,))
    return s


def _servers(c: _Checker, v: object, kp: tuple[str, ...]) -> tuple[ServerConfig, ...]:
    t = c.table(v, kp)
    out: list[ServerConfig] = []
    for name, s in t.items():
        skp = kp + (name,)
        if not _valid_name(name):
            c.error(skp, "%r is not a valid name (letters, digits, '_', '-', '.')" % (name,))
        s = c.table(s, skp)
        c.unknown(s, _SERVER_KEYS, skp)
        if "address" not in s:
            c.error(skp, "a server needs an address (\"HOST:PORT\")")
            continue
        try:
            host, port = parse_address(_str(s["address"]))
        except ValueError as e:
            c.error(skp + ("address",), str(e))
            continue
        out.append(build_server(c, name, host, port, s, skp))
    return tuple(out)


def build_server(c: _Checker, name: str, host: str, port: int, s: Mapping[str, Any], skp: tuple[str, ...]) -> ServerConfig:
    def _send_proxy(v: Any) -> str | None:
        if v is False:
            return None
        return _choice(("v1", "v2"))(v)

    def _check_address(v: Any) -> str:
        s_ = _nonempty_str(v)
        if any(ch in s_ for ch in " /"):
            raise ValueError("%r is not a host address" % (s_,))
        return s_

    return ServerConfig(
        name=name,
        host=host,
        port=port,
        weight=c.get(s, "weight", skp, _int(0, MAX_WEIGHT), 1),
        check=c.get(s, "check", skp, _bool, True),
        check_address=c.get(s, "check_address", skp, _check_address, None),
        check_port=c.get(s, "check_port", skp, _port, None),
        backup=c.get(s, "backup", skp, _bool, False),
        maxconn=c.get(s, "maxconn", skp, _int(0, 10_000_000), 0),
        disabled=c.get(s, "disabled", skp, _bool, False),
        slowstart=c.get(s, "slowstart", skp, _duration, 0.0),
        send_proxy=c.get(s, "send_proxy", skp, _send_proxy, None),
        tls=c.get(s, "tls", skp, _bool, False),
        tls_verify=c.get(s, "tls_verify", skp, _bool, True),
        tls_sni=c.get(s, "tls_sni", skp, _nonempty_str, None),
        tls_ca=c.get(s, "tls_ca", skp, _nonempty_str, None),
    )


def _routes(
    c: _Checker, v: object, kp: tuple[str, ...], backends: Mapping[str, BackendConfig], mode: str
) -> tuple[RouteConfig, ...]:
    if v is _MISSING:
        return ()
    if not isinstance(v, list):
        c.error(kp, "expected an array of tables ([[...routes]])")
        return ()
    if mode != "http" and v:
        c.error(kp, "routes need mode = \"http\"")
    out: list[RouteConfig] = []
    for i, r in enumerate(v):
        rkp = kp + (str(i),)
        r = c.table(r, rkp)
        c.unknown(r, _ROUTE_KEYS, rkp)
        backend = c.get(r, "backend", rkp, _nonempty_str, None)
        if backend is None:
            c.error(rkp, "a route needs a backend")
            continue
        _check_backend_ref(c, backend, backends, rkp + ("backend",), mode)

        def _host(x: Any) -> str:
            s = _nonempty_str(x).lower()
            if any(ch in s for ch in " /:\t") or ("*" in s and not s.startswith("*.")):
                raise ValueError("%r is not a host name or \"*.domain\"" % (s,))
            return s

        def _regex(x: Any) -> re.Pattern[bytes]:
            s = _nonempty_str(x)
            try:
                return re.compile(s.encode("utf-8"))
            except re.error as e:
                raise ValueError("%r is not a valid regular expression: %s" % (s, e))

        def _methods(x: Any) -> tuple[bytes, ...]:
            if isinstance(x, str):
                return (_http_method(x),)
            if isinstance(x, list) and x:
                return tuple(_http_method(m) for m in x)
            raise ValueError("expected a method or an array of methods")

        def _headers(x: Any) -> tuple[tuple[bytes, bytes], ...]:
            if not isinstance(x, dict) or not x:
                raise ValueError("expected a table of header = value")
            out_h = []
            for hn, hv in x.items():
                hb = hn.encode("ascii", "replace")
                if not hb or not all(ch in _TOKEN_CHARS for ch in hb):
                    raise ValueError("%r is not a valid header name" % (hn,))
                out_h.append((hb.lower(), _str(hv).encode("utf-8")))
            return tuple(out_h)

        def _prefix(x: Any) -> str:
            s = _nonempty_str(x)
            if not s.startswith("/"):
                raise ValueError("%r does not start with /" % (s,))
            return s

        out.append(
            RouteConfig(
                backend=backend,
                host=c.get(r, "host", rkp, _host, None),
                path_prefix=c.get(r, "path_prefix", rkp, _prefix, None),
                path_regex=c.get(r, "path_regex", rkp, _regex, None),
                methods=c.get(r, "method", rkp, _methods, ()),
                headers=c.get(r, "header", rkp, _headers, ()),
            )
        )
    return tuple(out)
