"""Configuration: parsing, defaults inheritance, and every key's valid and invalid case."""
from __future__ import annotations

import os
import tempfile
import textwrap

import pytest

from lbd import config
from lbd.config import ConfigError

BASE = """\
[admin]
socket = "off"

[frontends.www]
bind = "127.0.0.1:8080"
default_backend = "web"

[backends.web.servers]
web1 = { address = "127.0.0.1:8081" }
"""


def load(text: str, path: str = "lbd.toml") -> config.Config:
    return config.loads(textwrap.dedent(text), path)


def errors(text: str, path: str = "lbd.toml") -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load(text, path)
    return exc.value.errors


def test_minimal_config_gets_documented_defaults() -> None:
    """A frontend and a backend with one server is enough; the rest has SPEC's defaults."""
    c = load(BASE)
    assert c.global_ == config.GlobalConfig(maxconn=4096, grace=10.0, state_file=None, fastpath=True)
    assert c.log == config.LogConfig(level="info", access="-", format="haproxy")
    assert c.metrics == config.MetricsConfig(bind="127.0.0.1:9101", prefix="lbd")
    fe = c.frontends["www"]
    assert fe.mode == "http" and fe.maxconn == 2000 and fe.binds == ("127.0.0.1:8080",)
    be = c.backends["web"]
    assert (be.balance, be.retries, be.redispatch, be.forwardfor) == ("roundrobin", 3, True, True)
    assert be.timeouts == config.Timeouts()
    assert be.servers == (config.ServerConfig(name="web1", host="127.0.0.1", port=8081),)


def test_defaults_are_inherited_and_overridden() -> None:
    """[defaults] reaches every frontend and backend; each may override a key."""
    c = load(BASE.replace("[frontends.www]", """\
[defaults]
mode = "tcp"
retries = 1
maxconn = 50
[defaults.timeout]
connect = 250
server = "1m"

[frontends.www]""") + """
[backends.web.timeout]
server = "2s"
[backends.other]
retries = 5
[backends.other.servers]
o1 = { address = "127.0.0.1:9000" }
""")
    assert c.frontends["www"].mode == "tcp"
    assert c.frontends["www"].maxconn == 50
    web = c.backends["web"]
    assert web.retries == 1 and web.timeouts.connect == 0.25 and web.timeouts.server == 2.0
    other = c.backends["other"]
    assert other.retries == 5 and other.timeouts.server == 60.0 and other.mode == "tcp"


@pytest.mark.parametrize("value,seconds", [
    (5000, 5.0), ('"500ms"', 0.5), ('"2.5s"', 2.5), ('"1m"', 60.0), ('"1h"', 3600.0),
    ('"1d"', 86400.0), ('"250us"', 0.00025), ('"100"', 0.1),
])
def test_durations_take_milliseconds_or_units(value: object, seconds: float) -> None:
    """An integer is milliseconds; a string takes a unit."""
    c = load(BASE + "[backends.web.timeout]\nconnect = %s\n" % value)
    assert c.backends["web"].timeouts.connect == pytest.approx(seconds)


@pytest.mark.parametrize("value,size", [(8192, 8192), ('"16k"', 16384), ('"1m"', 1048576)])
def test_sizes_take_bytes_or_units(value: object, size: int) -> None:
    """max_header_size accepts bytes or k/m suffixes."""
    c = load(BASE.replace("[frontends.www]", "[defaults]\nmax_header_size = %s\n\n[frontends.www]" % value))
    assert c.frontends["www"].max_header_size == size


def test_errors_name_file_line_and_key_path() -> None:
    """Every error is FILE:LINE: key.path: message, all reported at once, in line order."""
    errs = errors("""\
        [global]
        maxconn = "lots"

        [frontends.www]
        bind = "127.0.0.1:8080"
        default_backend = "nope"

        [backends.web.servers]
        web1 = { address = "127.0.0.1:8081", weight = 300 }
        web2 = { address = "10.0.0.1" }
        """, "/etc/lbd.toml")
    assert errs == [
        "/etc/lbd.toml:2: global.maxconn: expected an integer, got a string",
        "/etc/lbd.toml:6: frontends.www.default_backend: no backend named 'nope'",
        "/etc/lbd.toml:9: backends.web.servers.web1.weight: 300 is above 256",
        "/etc/lbd.toml:10: backends.web.servers.web2.address: '10.0.0.1' is not ADDRESS:PORT",
    ]


def test_not_toml_reports_the_line() -> None:
    """A file that is not TOML is one error with its line."""
    errs = errors("[global]\nmaxconn = = 3\n")
    assert len(errs) == 1
    assert errs[0].startswith("lbd.toml:2: not valid TOML: ")


def test_missing_file_is_an_error_not_a_traceback() -> None:
    """A path that cannot be read is reported as such."""
    with pytest.raises(ConfigError) as exc:
        config.load("/nonexistent/lbd.toml")
    assert exc.value.errors == ["/nonexistent/lbd.toml: cannot read the configuration: No such file or directory"]


def test_duplicate_binds_are_rejected() -> None:
    """Two frontends (or the metrics listener) cannot bind the same address."""
    errs = errors(BASE + """
[frontends.two]
bind = ["127.0.0.1:8080"]
default_backend = "web"
""")
    assert errs == ["lbd.toml:12: frontends.two.bind: '127.0.0.1:8080' is already bound by frontends.www.bind"]


def test_bind_forms_become_endpoints() -> None:
    """*:PORT, [::]:PORT, ADDR:PORT and endpoint strings are all accepted."""
    assert config.bind_to_endpoint("*:80") == "tcp:80:interface=0.0.0.0"
    assert config.bind_to_endpoint("[::]:80") == "tcp6:80:interface=\\:\\:"
    assert config.bind_to_endpoint("[::1]:8080") == "tcp6:8080:interface=\\:\\:1"
    assert config.bind_to_endpoint("10.0.0.1:443") == "tcp:443:interface=10.0.0.1"
    assert config.bind_to_endpoint("unix:/run/lbd/www.sock") == "unix:/run/lbd/www.sock"
    assert config.bind_to_endpoint("systemd:domain=INET:index=0") == "systemd:domain=INET:index=0"


def test_errorfiles_are_read_and_normalised() -> None:
    """An errorfile with LF line ends is sent with CRLF and a correct Content-Length."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "503.http")
        with open(path, "wb") as f:
            f.write(b"HTTP/1.1 503 Service Unavailable\nContent-Type: text/html\nContent-Length: 99\n\n<h1>down</h1>\n")
        c = load(BASE + '[defaults.errorfiles]\n503 = "%s"\n' % path)
    assert c.backends["web"].errorfiles[503] == (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html\r\nContent-Length: 14\r\n\r\n<h1>down</h1>\n")
    assert c.frontends["www"].errorfiles[503] == c.backends["web"].errorfiles[503]


def test_missing_errorfile_is_an_error() -> None:
    """An errorfile that does not exist is named with its key."""
    errs = errors(BASE + '[defaults.errorfiles]\n503 = "/nonexistent/503.http"\n')
    assert errs == ["lbd.toml:11: defaults.errorfiles.503: cannot read /nonexistent/503.http: No such file or directory"]


def test_routes_are_parsed_in_order() -> None:
    """Routes keep their order; regexes are compiled; methods and headers are bytes."""
    c = load(BASE + """
[backends.api.servers]
a1 = { address = "127.0.0.1:9000" }

[[frontends.www.routes]]
backend = "api"
host = "API.example.com"
path_prefix = "/api/"
method = ["GET", "HEAD"]
header = { "X-Canary" = "1" }

[[frontends.www.routes]]
backend = "web"
path_regex = "^/static/.*[.]css$"
""")
    r1, r2 = c.frontends["www"].routes
    assert (r1.backend, r1.host, r1.path_prefix, r1.methods, r1.headers) == (
        "api", "api.example.com", "/api/", (b"GET", b"HEAD"), ((b"x-canary", b"1"),))
    assert r2.path_regex is not None and r2.path_regex.match(b"/static/a.css")


def test_route_errors_carry_the_array_index() -> None:
    """A bad route is named by its position."""
    errs = errors(BASE + """
[[frontends.www.routes]]
backend = "web"
path_regex = "("
""")
    assert len(errs) == 1
    assert errs[0].startswith("lbd.toml:13: frontends.www.routes.0.path_regex: '(' is not a valid regular expression")


def test_health_section() -> None:
    """A health table gives every server a check unless it says check = false."""
    c = load(BASE + """
[backends.web.health]
type = "http"
interval = "2s"
fastinter = 500
rise = 3
fall = 2
path = "/health"
expect_status = "200-299"
expect_body = "OK"
""")
    h = c.backends["web"].health
    assert h == config.HealthConfig(type="http", interval=2.0, fastinter=0.5, downinter=2.0, rise=3, fall=2,
                                    path="/health", expect_status=(200, 299), expect_body="OK")


def test_galera_check_needs_a_user() -> None:
    """galera checks log in, so a user is required."""
    errs = errors(BASE + '[backends.web.health]\ntype = "galera"\n')
    assert errs == ["lbd.toml:10: backends.web.health.user: a galera check needs a user to log in with"]


def test_mode_mismatch_between_frontend_and_backend() -> None:
    """An http frontend cannot use a tcp backend."""
    errs = errors(BASE + '[backends.web]\nmode = "tcp"\n')
    assert errs == ["lbd.toml:6: frontends.www.default_backend: backend 'web' is in tcp mode but this frontend is in http mode"]


# One row per key: a TOML snippet appended to BASE that must fail, and the expected error.
INVALID = [
    ("[global]\nmaxconn = 0\n", "global.maxconn: 0 is below 1"),
    ("[global]\ngrace = \"soon\"\n", "global.grace: 'soon' is not a duration (use milliseconds or a unit: us, ms, s, m, h, d)"),
    ("[global]\nstate_file = \"\"\n", "global.state_file: must not be empty"),
    ("[global]\nfastpath = \"on\"\n", "global.fastpath: expected true or false, got a string"),
    ("[global]\nthreads = 4\n", "global.threads: unknown key (expected one of: fastpath, grace, maxconn, state_file)"),
    ("[log]\nlevel = \"verbose\"\n", "log.level: 'verbose' is not one of: debug, info, warn, error"),
    ("[log]\naccess = 3\n", "log.access: expected a string, got an integer"),
    ("[log]\nformat = \"clf\"\n", "log.format: 'clf' is not one of: haproxy, json"),
    ("[metrics]\nbind = \"nowhere\"\n", "metrics.bind: 'nowhere' is not ADDRESS:PORT"),
    ("[metrics]\nprefix = \"9x\"\n", "metrics.prefix: '9x' is not a valid Prometheus metric name prefix"),
    ("[defaults]\nmode = \"udp\"\n", "defaults.mode: 'udp' is not one of: http, tcp"),
    ("[defaults]\nretries = -1\n", "defaults.retries: -1 is below 0"),
    ("[defaults]\nredispatch = \"yes\"\n", "defaults.redispatch: expected true or false, got a string"),
    ("[defaults]\nforwardfor = 1\n", "defaults.forwardfor: expected true or false, got an integer"),
    ("[defaults]\nmaxconn = 0\n", "defaults.maxconn: 0 is below 1"),
    ("[defaults]\nmax_header_size = 100\n", "defaults.max_header_size: 100 is outside 1k-1m"),
    ("[defaults.timeout]\nconnect = 0\n", "defaults.timeout.connect: must be greater than zero"),
    ("[defaults.timeout]\nserver = -5\n", "defaults.timeout.server: a duration cannot be negative"),
    ("[defaults.timeout]\nclient = true\n", "defaults.timeout.client: expected a duration (integer milliseconds or a string like \"2s\")"),
    ("[defaults.timeout]\nhttp_request = \"1x\"\n", "defaults.timeout.http_request: '1x' is not a duration (use milliseconds or a unit: us, ms, s, m, h, d)"),
    ("[defaults.timeout]\nkeep_alive = []\n", "defaults.timeout.keep_alive: expected a duration (integer milliseconds or a string like \"2s\")"),
    ("[defaults.timeout]\nqueue = \"\"\n", "defaults.timeout.queue: '' is not a duration (use milliseconds or a unit: us, ms, s, m, h, d)"),
    ("[defaults.timeout]\ntunnel = 0\n", "defaults.timeout.tunnel: must be greater than zero"),
    ("[defaults.timeout]\ncheck = 0\n", "defaults.timeout.check: must be greater than zero"),
    ("[defaults.timeout]\nidle = 5\n", "defaults.timeout.idle: unknown key (expected one of: check, client, connect, http_request, keep_alive, queue, server, tunnel)"),
    ("[defaults.errorfiles]\n404 = \"/x\"\n", "defaults.errorfiles.404: lbd generates no 404 responses"),
    ("[backends.web]\nbalance = \"hash\"\n", "backends.web.balance: 'hash' is not one of: roundrobin, static-rr, leastconn, first, source, random"),
    ("[backends.web.health]\ntype = \"smtp\"\n", "backends.web.health.type: 'smtp' is not one of: tcp, http, mysql, galera"),
    ("[backends.web.health]\ninterval = 0\n", "backends.web.health.interval: must be greater than zero"),
    ("[backends.web.health]\nfastinter = \"x\"\n", "backends.web.health.fastinter: 'x' is not a duration"),
    ("[backends.web.health]\ndowninter = -1\n", "backends.web.health.downinter: a duration cannot be negative"),
    ("[backends.web.health]\nrise = 0\n", "backends.web.health.rise: 0 is below 1"),
    ("[backends.web.health]\nfall = 0\n", "backends.web.health.fall: 0 is below 1"),
    ("[backends.web.health]\nport = 70000\n", "backends.web.health.port: 70000 is above 65535"),
    ("[backends.web.health]\ntype = \"http\"\nmethod = \"G T\"\n", "backends.web.health.method: 'G T' is not a valid HTTP method"),
    ("[backends.web.health]\ntype = \"http\"\npath = \"health\"\n", "backends.web.health.path: 'health' is not an absolute HTTP path without spaces"),
    ("[backends.web.health]\ntype = \"http\"\nhost = \"\"\n", "backends.web.health.host: must not be empty"),
    ("[backends.web.health]\ntype = \"http\"\nexpect_status = \"200-99\"\n", "backends.web.health.expect_status: '200-99' is not a range of HTTP status codes (100-599)"),
    ("[backends.web.health]\ntype = \"http\"\nexpect_body = \"\"\n", "backends.web.health.expect_body: must not be empty"),
    ("[backends.web.health]\ntype = \"tcp\"\nexpect_body = \"OK\"\n", "backends.web.health.expect_body: only applies to type = \"http\" checks"),
    ("[backends.web.health]\ntype = \"mysql\"\nuser = 3\n", "backends.web.health.user: expected a string, got an integer"),
    ("[backends.web.health]\ntype = \"galera\"\nuser = \"u\"\npassword = 1\n", "backends.web.health.password: expected a string, got an integer"),
    ("[backends.web.health]\ntype = \"galera\"\nuser = \"u\"\nallow_donor = \"no\"\n", "backends.web.health.allow_donor: expected true or false, got a string"),
    ("[backends.web.health]\ntype = \"mysql\"\nallow_donor = true\n", "backends.web.health.allow_donor: only applies to type = \"galera\" checks"),
    ("[backends.web.servers.web2]\naddress = \"127.0.0.1:1\"\nweight = 257\n", "backends.web.servers.web2.weight: 257 is above 256"),
    ("[backends.web.servers.web2]\naddress = \"127.0.0.1:1\"\ncheck = 1\n", "backends.web.servers.web2.check: expected true or false, got an integer"),
    ("[backends.web.servers.web2]\naddress = \"127.0.0.1:1\"\ncheck_address = \"a b\"\n", "backends.web.servers.web2.check_address: 'a b' is not a host address"),
    ("[backends.web.servers.web2]\naddress = \"127.0.0.1:1\"\ncheck_port = 0\n", "backends.web.servers.web2.check_port: 0 is below 1"),
    ("[backends.web.servers.web2]\naddress = \"127.0.0.1:1\"\nbackup = \"yes\"\n", "backends.web.servers.web2.backup: expected true or false, got a string"),
    ("[backends.web.servers.web2]\naddress = \"127.0.0.1:1\"\nmaxconn = -1\n", "backends.web.servers.web2.maxconn: -1 is below 0"),
    ("[backends.web.servers.web2]\naddress = \"127.0.0.1:1\"\ndisabled = 0\n", "backends.web.servers.web2.disabled: expected true or false, got an integer"),
    ("[backends.web.servers.web2]\naddress = \"127.0.0.1:1\"\nslowstart = \"fast\"\n", "backends.web.servers.web2.slowstart: 'fast' is not a duration"),
    ("[backends.web.servers.web2]\naddress = \"127.0.0.1:1\"\nsend_proxy = \"v3\"\n", "backends.web.servers.web2.send_proxy: 'v3' is not one of: v1, v2"),
    ("[backends.web.servers.web2]\naddress = \"127.0.0.1:1\"\ntls = \"on\"\n", "backends.web.servers.web2.tls: expected true or false, got a string"),
    ("[backends.web.servers.web2]\naddress = \"127.0.0.1:1\"\ntls_verify = 0\n", "backends.web.servers.web2.tls_verify: expected true or false, got an integer"),
    ("[backends.web.servers.web2]\naddress = \"127.0.0.1:1\"\ntls_sni = \"\"\n", "backends.web.servers.web2.tls_sni: must not be empty"),
    ("[backends.web.servers.web2]\naddress = \"127.0.0.1:1\"\ntls_ca = 5\n", "backends.web.servers.web2.tls_ca: expected a string, got an integer"),
    ("[backends.web.servers.web2]\nweight = 1\n", "backends.web.servers.web2: a server needs an address (\"HOST:PORT\")"),
    ("[backends.web.servers.web2]\naddress = \"127.0.0.1:1\"\nport = 80\n", "backends.web.servers.web2.port: unknown key"),
    ("[frontends.f2]\nbind = []\n", "frontends.f2.bind: expected a string or a non-empty array of strings"),
    ("[frontends.f2]\nbind = \"127.0.0.1:9999\"\nmaxconn = \"x\"\n", "frontends.f2.maxconn: expected an integer, got a string"),
    ("[frontends.f2]\nbind = \"127.0.0.1:9999\"\nmode = \"tcp\"\n[[frontends.f2.routes]]\nbackend = \"web\"\n", "frontends.f2.routes: routes need mode = \"http\""),
    ("[[frontends.www.routes]]\nhost = \"a.com\"\n", "frontends.www.routes.0: a route needs a backend"),
    ("[[frontends.www.routes]]\nbackend = \"web\"\nhost = \"a b\"\n", "frontends.www.routes.0.host: 'a b' is not a host name or \"*.domain\""),
    ("[[frontends.www.routes]]\nbackend = \"web\"\npath_prefix = \"api\"\n", "frontends.www.routes.0.path_prefix: 'api' does not start with /"),
    ("[[frontends.www.routes]]\nbackend = \"web\"\nmethod = []\n", "frontends.www.routes.0.method: expected a method or an array of methods"),
    ("[[frontends.www.routes]]\nbackend = \"web\"\nheader = { \"X Y\" = \"1\" }\n", "frontends.www.routes.0.header: 'X Y' is not a valid header name"),
    ("[[frontends.www.routes]]\nbackend = \"web\"\ncookie = \"a\"\n", "frontends.www.routes.0.cookie: unknown key"),
    ("[admin]\nmode = \"rw\"\n", "admin.mode: 'rw' is not an octal file mode such as \"660\""),
    ("[admin]\nlevel = \"root\"\n", "admin.level: 'root' is not one of: user, operator, admin"),
    ("[stats]\nenabled = true\n", "stats: unknown key"),
]


@pytest.mark.parametrize("snippet,expected", INVALID, ids=[e.split(":")[0] for _, e in INVALID])
def test_invalid_values_are_named(snippet: str, expected: str) -> None:
    """Each key's invalid value is reported with its key path (and a line)."""
    text = BASE.replace("[admin]\nsocket = \"off\"\n", "") if snippet.startswith("[admin]") else BASE
    errs = errors(text + snippet)
    assert any(expected in e for e in errs), errs
    assert all(e.startswith("lbd.toml:") for e in errs)


VALID = [
    ("[global]\nmaxconn = 100\ngrace = \"30s\"\nstate_file = \"/var/lib/lbd/state.json\"\n", lambda c: c.global_.state_file == "/var/lib/lbd/state.json"),
    ("[log]\nlevel = \"debug\"\naccess = \"off\"\nformat = \"json\"\n", lambda c: c.log == config.LogConfig("debug", "off", "json")),
    ("[metrics]\nbind = \"127.0.0.1:9999\"\nprefix = \"haproxy\"\n", lambda c: c.metrics.prefix == "haproxy"),
    ("[metrics]\nbind = \"off\"\n", lambda c: c.metrics.bind is None),
    ("[backends.web]\nbalance = \"leastconn\"\nretries = 0\nredispatch = false\nforwardfor = false\n",
     lambda c: (c.backends["web"].balance, c.backends["web"].retries, c.backends["web"].redispatch) == ("leastconn", 0, False)),
    ("[backends.web.health]\ntype = \"mysql\"\nuser = \"lbd_check\"\nport = 3306\n", lambda c: c.backends["web"].health.user == "lbd_check"),
    ("[backends.web.health]\ntype = \"galera\"\nuser = \"u\"\npassword = \"p\"\nallow_donor = true\n", lambda c: c.backends["web"].health.allow_donor),
    ("[backends.web.servers.web2]\naddress = \"[::1]:8082\"\nweight = 0\ncheck = false\ncheck_address = \"127.0.0.2\"\ncheck_port = 9200\n"
     "backup = true\nmaxconn = 10\ndisabled = true\nslowstart = \"30s\"\nsend_proxy = \"v2\"\ntls = true\ntls_verify = false\ntls_sni = \"a.b\"\ntls_ca = \"/ca.pem\"\n",
     lambda c: c.backends["web"].servers[1] == config.ServerConfig(
         name="web2", host="::1", port=8082, weight=0, check=False, check_address="127.0.0.2", check_port=9200,
         backup=True, maxconn=10, disabled=True, slowstart=30.0, send_proxy="v2", tls=True, tls_verify=False,
         tls_sni="a.b", tls_ca="/ca.pem")),
    ("[admin]\nsocket = \"/tmp/x.sock\"\nmode = \"600\"\nlevel = \"operator\"\n", lambda c: (c.admin.mode, c.admin.level) == (0o600, "operator")),
]


@pytest.mark.parametrize("snippet,check", VALID)
def test_valid_values_are_accepted(snippet: str, check) -> None:  # type: ignore[no-untyped-def]
    """Each key's valid value loads into the typed object."""
    text = BASE.replace("[admin]\nsocket = \"off\"\n", "") if snippet.startswith("[admin]") else BASE
    assert check(load(text + snippet))


def test_example_config_is_valid() -> None:
    """The shipped etc/lbd.toml passes validation."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config.load(os.path.join(here, "etc", "lbd.toml"))
