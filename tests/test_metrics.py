"""The Prometheus collector, the status page, /healthz and the bounded metrics listener."""
from __future__ import annotations

import re
from typing import Any

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from lbd import config, metrics
from lbd.config import BackendConfig, FrontendConfig, HealthConfig, ServerConfig
from lbd.pool import BUCKETS, Pool
from lbd.service import LBService
from lbd.testing import FakeTCPTransport

CONFIG = """\
[log]
access = "off"
[admin]
socket = "off"
[metrics]
bind = "127.0.0.1:19101"
prefix = "%s"
[frontends.www]
bind = "127.0.0.1:18080"
default_backend = "web"
[frontends.db]
bind = "127.0.0.1:13306"
mode = "tcp"
default_backend = "static"
[backends.web.health]
type = "http"
rise = 2
fall = 3
[backends.web.servers]
web1 = { address = "10.0.0.1:80", weight = 2 }
web2 = { address = "10.0.0.2:8080", maxconn = 50 }
spare = { address = "10.0.0.3:80", backup = true }
[backends.static]
mode = "tcp"
[backends.static.servers]
s1 = { address = "10.0.1.1:80", check = false }
"""

# Every name SPEC section 5 lists, as exposed with prefix "lbd" (counters with _total).
SPEC_NAMES = (
    "lbd_process_current_connections", "lbd_process_max_connections", "lbd_process_start_time_seconds",
    "lbd_frontend_current_sessions", "lbd_frontend_sessions_total", "lbd_frontend_bytes_in_total",
    "lbd_frontend_bytes_out_total", "lbd_frontend_request_errors_total", "lbd_frontend_http_requests_total",
    "lbd_frontend_http_responses_total", "lbd_backend_status", "lbd_backend_active_servers",
    "lbd_backend_backup_servers", "lbd_backend_current_sessions", "lbd_backend_sessions_total",
    "lbd_backend_current_queue", "lbd_backend_connection_errors_total", "lbd_backend_response_errors_total",
    "lbd_backend_retry_warnings_total", "lbd_backend_redispatch_warnings_total", "lbd_backend_http_responses_total",
    "lbd_server_status", "lbd_server_weight", "lbd_server_current_sessions", "lbd_server_sessions_total",
    "lbd_server_bytes_in_total", "lbd_server_bytes_out_total", "lbd_server_connection_errors_total",
    "lbd_server_check_status", "lbd_server_check_failures_total", "lbd_server_check_up_down_total",
    "lbd_server_check_duration_seconds", "lbd_server_last_state_change_seconds", "lbd_server_downtime_seconds_total",
    "lbd_backend_connect_time_seconds", "lbd_backend_response_time_seconds", "lbd_backend_total_time_seconds",
)


def make_service(prefix: str = "lbd") -> LBService:
    """A service (not started) on a memory reactor: frontends www (http) and db (tcp), backends web and static."""
    cfg = config.loads(CONFIG % prefix, "lbd.toml")
    return LBService(cfg, MemoryReactorClock())


def set_known_state(service: LBService) -> None:
    """web1 UP L7OK, web2 DOWN L4CON, spare MAINT; traffic counted on www and web."""
    pool = service.pool
    fe = pool.frontends["www"]
    fe.tot_sess, fe.req_tot, fe.cur_sess, fe.bytes_in, fe.bytes_out = 120, 130, 3, 4000, 90000
    fe.hrsp = [0, 120, 2, 5, 3, 0]
    be = pool.backends["web"]
    web1, web2, spare = be.servers["web1"], be.servers["web2"], be.servers["spare"]
    web1.check_status, web1.check_code, web1.check_duration = "L7OK", 200, 0.012
    web2.check_status, web2.check_code, web2.check_duration = "L4CON", None, 0.0005
    web2.chkfail = 3
    be.set_operational(web2, False)
    be.set_maint(spare, True)
    web1.tot_sess, web1.bytes_in, web1.bytes_out = 118, 3900, 88000
    web1.hrsp = [0, 118, 0, 0, 0, 0]
    be.tot_sess, be.req_tot, be.econ, be.wretr = 120, 130, 2, 2
    be.hrsp = [0, 120, 2, 5, 3, 0]
    for v in (0.0003, 0.0003, 0.002, 0.04):
        be.connect_time.observe(v)
    be.response_time.observe(0.2)
    be.total_time.observe(1.5)


def scrape(service: LBService, prefix: str = "lbd") -> dict[str, Any]:
    """Parse the exposition back: family name -> family."""
    text = metrics.PoolCollector(service.pool, prefix).exposition().decode("utf-8")
    return {f.name: f for f in text_string_to_metric_families(text)}


def values(family: Any, sample_name: str | None = None) -> dict[tuple[tuple[str, str], ...], float]:
    """Sample labels (sorted pairs) -> value for one family's samples."""
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples
            if sample_name is None or s.name == sample_name}


class CollectorTests(TestCase):

    def test_spec_names_exposed(self) -> None:
        """Every metric name SPEC section 5 lists is exposed, with HELP and TYPE."""
        service = make_service()
        set_known_state(service)
        text = metrics.PoolCollector(service.pool).exposition().decode()
        missing = [n for n in SPEC_NAMES if "# TYPE %s " % n not in text or "# HELP %s " % n not in text]
        self.assertEqual(missing, [])

    def test_prefix(self) -> None:
        """With prefix 'haproxy' every name starts with haproxy_, as HAProxy's exporter."""
        service = make_service("haproxy")
        names = scrape(service, "haproxy")
        self.assertEqual(sorted(n for n in names if not n.startswith("haproxy_")), [])
        self.assertIn("haproxy_server_status", names)

    def test_server_status_one_hot(self) -> None:
        """lbd_server_status has one series per state, 1 on the current one."""
        service = make_service()
        set_known_state(service)
        got = values(scrape(service)["lbd_server_status"])
        for server, current in (("web1", "UP"), ("web2", "DOWN"), ("spare", "MAINT"), ("s1", "UP")):
            proxy = "static" if server == "s1" else "web"
            row = {state: got[(("proxy", proxy), ("server", server), ("state", state))]
                   for state in ("DOWN", "UP", "MAINT", "DRAIN", "NOLB")}
            self.assertEqual(row, {s: 1.0 if s == current else 0.0 for s in row}, server)

    def test_check_status_one_hot(self) -> None:
        """lbd_server_check_status has a series per check status, 1 on the last result; unchecked servers none."""
        service = make_service()
        set_known_state(service)
        got = values(scrape(service)["lbd_server_check_status"])
        web1 = {k[2][1]: v for k, v in got.items() if k[1] == ("server", "web1")}
        self.assertEqual(web1, {
            "SOCKERR": 0.0, "L4OK": 0.0, "L4TOUT": 0.0, "L4CON": 0.0, "L6OK": 0.0, "L6TOUT": 0.0, "L6RSP": 0.0,
            "L7TOUT": 0.0, "L7RSP": 0.0, "L7OK": 1.0, "L7OKC": 0.0, "L7STS": 0.0,
        })
        self.assertEqual(sorted({k[1][1] for k in got}), ["spare", "web1", "web2"])

    def test_check_code_and_duration(self) -> None:
        """check_code carries the L7 code (0 otherwise); check_duration_seconds only after a result."""
        service = make_service()
        set_known_state(service)
        fams = scrape(service)
        code = values(fams["lbd_server_check_code"])
        duration = values(fams["lbd_server_check_duration_seconds"])
        self.assertEqual(
            (code[(("proxy", "web"), ("server", "web1"))], code[(("proxy", "web"), ("server", "web2"))],
             duration, (("proxy", "web"), ("server", "spare")) in code),
            (200.0, 0.0, {(("proxy", "web"), ("server", "web1")): 0.012,
                          (("proxy", "web"), ("server", "web2")): 0.0005}, True),
        )

    def test_frontend_http(self) -> None:
        """http frontends expose requests and responses per code class; tcp frontends do not."""
        service = make_service()
        set_known_state(service)
        fams = scrape(service)
        self.assertEqual(values(fams["lbd_frontend_http_requests"]), {(("proxy", "www"),): 130.0})
        self.assertEqual(values(fams["lbd_frontend_http_responses"]), {
            (("code", c), ("proxy", "www")): v
            for c, v in (("1xx", 0.0), ("2xx", 120.0), ("3xx", 2.0), ("4xx", 5.0), ("5xx", 3.0), ("other", 0.0))
        })

    def test_frontend_counters(self) -> None:
        """Frontend sessions and bytes are the pool's counters."""
        service = make_service()
        set_known_state(service)
        fams = scrape(service)
        got = [values(fams[n])[(("proxy", "www"),)] for n in (
            "lbd_frontend_sessions", "lbd_frontend_current_sessions", "lbd_frontend_bytes_in",
            "lbd_frontend_bytes_out", "lbd_frontend_limit_sessions")]
        self.assertEqual(got, [120.0, 3.0, 4000.0, 90000.0, 2000.0])

    def test_frontend_status(self) -> None:
        """lbd_frontend_status is UP, and DOWN once lbd is stopping."""
        service = make_service()
        before = values(scrape(service)["lbd_frontend_status"])
        service.pool.stopping = True
        after = values(scrape(service)["lbd_frontend_status"])
        key = (("proxy", "www"), ("state", "UP"))
        self.assertEqual((before[key], after[key], after[(("proxy", "www"), ("state", "DOWN"))]), (1.0, 0.0, 1.0))

    def test_backend(self) -> None:
        """Backend status, server counts and error counters come from the pool."""
        service = make_service()
        set_known_state(service)
        fams = scrape(service)
        web = (("proxy", "web"),)
        self.assertEqual(
            [values(fams[n])[web] for n in ("lbd_backend_active_servers", "lbd_backend_backup_servers",
                                             "lbd_backend_sessions", "lbd_backend_connection_errors",
                                             "lbd_backend_retry_warnings", "lbd_backend_http_requests")],
            [1.0, 0.0, 120.0, 2.0, 2.0, 130.0],
        )
        self.assertEqual(values(fams["lbd_backend_status"])[(("proxy", "web"), ("state", "UP"))], 1.0)

    def test_backend_down(self) -> None:
        """A backend with no usable server has lbd_backend_status{state="DOWN"} 1."""
        service = make_service()
        be = service.pool.backends["web"]
        for srv in be.servers.values():
            be.set_operational(srv, False)
        got = values(scrape(service)["lbd_backend_status"])
        self.assertEqual((got[(("proxy", "web"), ("state", "DOWN"))], got[(("proxy", "web"), ("state", "UP"))]),
                         (1.0, 0.0))

    def test_histogram(self) -> None:
        """Histograms have the pool's buckets, cumulative, +Inf equal to the count, and the sum."""
        service = make_service()
        set_known_state(service)
        fam = scrape(service)["lbd_backend_connect_time_seconds"]
        web = [s for s in fam.samples if s.labels.get("proxy") == "web"]
        buckets = {s.labels["le"]: s.value for s in web if s.name.endswith("_bucket")}
        count = [s.value for s in web if s.name.endswith("_count")]
        total = [s.value for s in web if s.name.endswith("_sum")]
        self.assertEqual(len(buckets), len(BUCKETS) + 1)
        self.assertEqual((buckets["0.00025"], buckets["0.0005"], buckets["0.0025"], buckets["0.05"], buckets["+Inf"]),
                         (0.0, 2.0, 3.0, 4.0, 4.0))
        self.assertEqual(count, [4.0])
        self.assertAlmostEqual(total[0], 0.0426)

    def test_server_counters(self) -> None:
        """Server sessions, bytes, weight, check failures and transitions come from the pool."""
        service = make_service()
        set_known_state(service)
        fams = scrape(service)
        web1 = (("proxy", "web"), ("server", "web1"))
        web2 = (("proxy", "web"), ("server", "web2"))
        self.assertEqual(
            [values(fams["lbd_server_sessions"])[web1], values(fams["lbd_server_bytes_in"])[web1],
             values(fams["lbd_server_bytes_out"])[web1], values(fams["lbd_server_weight"])[web1],
             values(fams["lbd_server_check_failures"])[web2], values(fams["lbd_server_check_up_down"])[web2]],
            [118.0, 3900.0, 88000.0, 2.0, 3.0, 1.0],
        )

    def test_times(self) -> None:
        """last_state_change and downtime are seconds on the pool's clock, the open DOWN period included."""
        service = make_service()
        clock = service.reactor
        be = service.pool.backends["web"]
        clock.advance(100)
        be.set_operational(be.servers["web2"], False)
        clock.advance(25)
        fams = scrape(service)
        web2 = (("proxy", "web"), ("server", "web2"))
        self.assertEqual((values(fams["lbd_server_last_state_change_seconds"])[web2],
                          values(fams["lbd_server_downtime_seconds"])[web2],
                          values(fams["lbd_process_uptime_seconds"])[()]), (25.0, 25.0, 125.0))

    def test_process(self) -> None:
        """Process metrics: current and max connections, start time."""
        service = make_service()
        service.pool.cur_conns = 7
        fams = scrape(service)
        self.assertEqual([values(fams[n])[()] for n in ("lbd_process_current_connections",
                                                        "lbd_process_max_connections",
                                                        "lbd_process_start_time_seconds")], [7.0, 4096.0, 0.0])

    def test_tcp_backend_has_no_http_series(self) -> None:
        """A tcp backend has no http_responses series."""
        service = make_service()
        got = values(scrape(service)["lbd_backend_http_responses"])
        self.assertEqual(sorted({dict(k)["proxy"] for k in got}), ["web"])

    def test_encoder_matches_generate_latest(self) -> None:
        """The /metrics encoder writes exactly what prometheus-client's generate_latest writes."""
        service = make_service()
        set_known_state(service)
        registry = metrics.make_registry(service.pool, "lbd")
        self.assertEqual(metrics.PoolCollector(service.pool).exposition(), generate_latest(registry))

    def test_encoder_escapes_like_generate_latest(self) -> None:
        """Label values with backslashes, quotes and newlines are escaped as prometheus-client does."""
        pool = Pool(MemoryReactorClock(), 10)
        odd = 'we"b\\1\n'
        pool.add_backend(BackendConfig(name=odd, mode="http", health=HealthConfig(),
                                       servers=(ServerConfig(odd, "10.0.0.1", 80),)))
        pool.add_frontend(FrontendConfig(name=odd, binds=("*:80",), default_backend=odd))
        pool.backends[odd].connect_time.observe(0.1)
        registry = metrics.make_registry(pool, "lbd")
        self.assertEqual(metrics.PoolCollector(pool).exposition(), generate_latest(registry))

    def test_empty_pool(self) -> None:
        """A pool with nothing configured exposes the process metrics only."""
        pool = Pool(MemoryReactorClock(), 10)
        names = {f.name for f in text_string_to_metric_families(metrics.PoolCollector(pool).exposition().decode())}
        self.assertEqual(sorted(n.split("_")[1] for n in names), ["process"] * len(names))

    def test_reads_live_state(self) -> None:
        """The collector keeps nothing: a second scrape sees counters changed since the first."""
        service = make_service()
        collector = metrics.PoolCollector(service.pool)
        first = collector.exposition()
        service.pool.frontends["www"].req_tot += 5
        second = collector.exposition()
        self.assertEqual((b'lbd_frontend_http_requests_total{proxy="www"} 0.0' in first,
                          b'lbd_frontend_http_requests_total{proxy="www"} 5.0' in second), (True, True))


class StatusPageTests(TestCase):

    def test_servers_and_states(self) -> None:
        """The page lists every server with its state, coloured by state class."""
        service = make_service()
        set_known_state(service)
        page = metrics.status_page(service.pool).decode()
        for server, state, cls in (("web1", "UP", "UP"), ("web2", "DOWN", "DOWN"), ("spare", "MAINT", "MAINT"),
                                   ("s1", "no check", "NOCHECK")):
            self.assertIn('<tr class="server" data-server="%s" data-state="%s"><td class="n">%s</td>'
                          '<td class="%s">%s</td>' % (server, state, server, cls, state), page)

    def test_check_column(self) -> None:
        """A server's last check result and code are shown."""
        service = make_service()
        set_known_state(service)
        self.assertIn('<td class="n">L7OK 200</td><td>12</td>', metrics.status_page(service.pool).decode())

    def test_refresh_and_phone(self) -> None:
        """The page refreshes itself and sets a viewport for phones."""
        page = metrics.status_page(make_service().pool).decode()
        self.assertEqual(('<meta http-equiv="refresh" content="5">' in page,
                          '<meta name="viewport" content="width=device-width,initial-scale=1">' in page), (True, True))

    def test_no_external_assets(self) -> None:
        """Nothing on the page is fetched from elsewhere: no URLs, scripts, links or images."""
        page = metrics.status_page(make_service().pool).decode().lower()
        self.assertEqual([w for w in ("http:", "https:", "<script", "<link", "<img", "src=", "url(") if w in page], [])

    def test_escapes_names(self) -> None:
        """Names are HTML-escaped."""
        pool = Pool(MemoryReactorClock(), 10)
        pool.add_backend(BackendConfig(name="<b>", servers=(ServerConfig("<i>", "10.0.0.1", 80),)))
        page = metrics.status_page(pool).decode()
        self.assertEqual(("&lt;i&gt;" in page, "<i>" in page), (True, False))

    def test_going_down_colour(self) -> None:
        """An UP server losing checks ('UP 2/3') has the going-down colour."""
        service = make_service()
        service.pool.backends["web"].servers["web1"].checker = type("C", (), {"health": 3, "stop": lambda s: None})()
        self.assertIn('<td class="GOINGDOWN">UP 2/3</td>', metrics.status_page(service.pool).decode())


def response(transport: FakeTCPTransport) -> tuple[int, dict[bytes, bytes], bytes]:
    """Status, headers (lower-cased names) and body of the first response written."""
    raw = transport.value()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


class ListenerTests(TestCase):

    def setUp(self) -> None:
        self.service = make_service()
        set_known_state(self.service)
        self.reactor: MemoryReactorClock = self.service.reactor
        self.site = metrics.make_site(self.service)

    def connect(self) -> tuple[Any, FakeTCPTransport]:
        proto = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = FakeTCPTransport(peer=("127.0.0.1", 40000), host=("127.0.0.1", 9101))
        proto.makeConnection(transport)
        return proto, transport

    def get(self, path: bytes, method: bytes = b"GET") -> tuple[int, dict[bytes, bytes], bytes]:
        proto, transport = self.connect()
        proto.dataReceived(method + b" " + path + b" HTTP/1.1\r\nHost: lb\r\n\r\n")
        return response(transport)

    def test_metrics(self) -> None:
        """GET /metrics answers 200 in the Prometheus text format."""
        status, headers, body = self.get(b"/metrics")
        self.assertEqual((status, headers[b"content-type"], b"\nlbd_server_status{" in body),
                         (200, b"text/plain; version=0.0.4; charset=utf-8", True))

    def test_status_page(self) -> None:
        """GET / answers the HTML status page with a policy forbidding external assets."""
        status, headers, body = self.get(b"/")
        self.assertEqual((status, headers[b"content-type"], headers[b"content-security-policy"],
                          body.startswith(b"<!DOCTYPE html>")),
                         (200, b"text/html; charset=utf-8", b"default-src 'none'; style-src 'unsafe-inline'", True))

    def test_healthz(self) -> None:
        """GET /healthz answers 200 OK while lbd serves."""
        status, _, body = self.get(b"/healthz")
        self.assertEqual((status, body), (200, b"OK\n"))

    def test_healthz_stopping(self) -> None:
        """GET /healthz answers 503 while lbd is stopping."""
        self.service.stopping = True
        status, _, body = self.get(b"/healthz")
        self.assertEqual((status, body), (503, b"stopping\n"))

    def test_head(self) -> None:
        """HEAD /healthz answers 200 with no body."""
        status, headers, body = self.get(b"/healthz", b"HEAD")
        self.assertEqual((status, headers[b"content-length"], body), (200, b"3", b""))

    def test_other_paths_404(self) -> None:
        """Any other path answers 404."""
        got = [self.get(p)[0] for p in (b"/nope", b"/metrics/", b"/metricsx", b"/healthz/x", b"//", b"/index.html")]
        self.assertEqual(got, [404] * 6)

    def test_query_ignored(self) -> None:
        """A query string does not change the path: /metrics?x=1 is /metrics."""
        self.assertEqual(self.get(b"/metrics?x=1")[0], 200)

    def test_keep_alive(self) -> None:
        """Two pipelined requests on one connection get two answers in order."""
        proto, transport = self.connect()
        proto.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: lb\r\n\r\nGET /nope HTTP/1.1\r\nHost: lb\r\n\r\n")
        self.assertEqual(re.findall(rb"HTTP/1\.1 (\d{3}) ", transport.value()), [b"200", b"404"])

    def test_long_line_431(self) -> None:
        """A header line longer than the head limit gets 431 and the connection is closed."""
        proto, transport = self.connect()
        proto.dataReceived(b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * metrics.MAX_HEAD + b"\r\n\r\n")
        status, _, body = response(transport)
        self.assertEqual((status, body, transport.write_closed), (431, b"431 Request Header Fields Too Large\n", True))

    def test_big_head_431(self) -> None:
        """Many short headers adding up past the head limit get 431."""
        proto, transport = self.connect()
        headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 90) for i in range(100))
        proto.dataReceived(b"GET /metrics HTTP/1.1\r\n" + headers + b"\r\n")
        self.assertEqual((response(transport)[0], transport.write_closed), (431, True))

    def test_body_413(self) -> None:
        """A declared body over the limit gets 413 before any of it is read."""
        proto, transport = self.connect()
        proto.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: lb\r\nContent-Length: 100000000\r\n\r\n")
        self.assertEqual((response(transport)[0], transport.write_closed), (413, True))

    def test_chunked_body_413(self) -> None:
        """A chunked body growing past the limit gets 413."""
        proto, transport = self.connect()
        proto.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n")
        proto.dataReceived(b"800\r\n" + b"a" * 0x800 + b"\r\n")
        self.assertEqual((response(transport)[0], transport.write_closed), (413, True))

    def test_refused_answer_is_alone(self) -> None:
        """After a refusal the rest of the request is ignored: exactly one answer is written."""
        proto, transport = self.connect()
        proto.dataReceived(b"GET /healthz HTTP/1.1\r\nContent-Length: 2000\r\n\r\n" + b"a" * 2000
                           + b"GET /healthz HTTP/1.1\r\n\r\n")
        self.assertEqual(transport.value().count(b"HTTP/1.1 "), 1)

    def test_small_body_allowed(self) -> None:
        """A small body (some clients send one with GET) is read and the request answered."""
        proto, transport = self.connect()
        proto.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: lb\r\nContent-Length: 5\r\n\r\nhello")
        self.assertEqual(response(transport)[0], 200)

    def test_slow_request_408(self) -> None:
        """A request head still incomplete at the deadline gets 408, however it trickles in."""
        proto, transport = self.connect()
        proto.dataReceived(b"GET /metrics HTTP/1.1\r\n")
        for _ in range(9):
            self.reactor.advance(1.0)
            proto.dataReceived(b"X: y\r\n")
        self.reactor.advance(metrics.REQUEST_DEADLINE - 9 - 0.01)
        before = transport.value()
        self.reactor.advance(0.02)
        self.assertEqual((before, response(transport)[0], transport.write_closed), (b"", 408, True))

    def test_refused_connection_aborted_after_linger(self) -> None:
        """A refused client that keeps the connection open is aborted after the linger time."""
        proto, transport = self.connect()
        proto.dataReceived(b"GET /metrics HTTP/1.1\r\n")
        self.reactor.advance(metrics.REQUEST_DEADLINE + 0.01)
        self.reactor.advance(metrics.LINGER - 0.02)
        before = transport.aborted
        self.reactor.advance(0.02)
        self.assertEqual((before, transport.aborted), (False, True))

    def test_deadline_per_request(self) -> None:
        """The deadline starts at each request's first line: a kept-alive connection is not cut for its age."""
        proto, transport = self.connect()
        proto.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: lb\r\n\r\n")
        self.reactor.advance(metrics.REQUEST_DEADLINE - 1)
        proto.dataReceived(b"GET /healthz HTTP/1.1\r\n")
        self.reactor.advance(metrics.REQUEST_DEADLINE - 1)
        proto.dataReceived(b"Host: lb\r\n\r\n")
        raw = transport.value()
        self.assertEqual((raw.count(b"HTTP/1.1 200 OK"), transport.write_closed), (2, False))

    def test_idle_timeout(self) -> None:
        """A connection that sends nothing is closed after the idle timeout."""
        proto, transport = self.connect()
        self.reactor.advance(metrics.IDLE_TIMEOUT - 0.01)
        before = transport.disconnecting
        self.reactor.advance(0.02)
        self.assertEqual((before, transport.disconnecting), (False, True))

    def test_no_request_logging(self) -> None:
        """Scrapes are not logged line by line."""
        from twisted.logger import globalLogPublisher

        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.site.startFactory()
        self.addCleanup(self.site.stopFactory)
        self.get(b"/metrics")
        self.assertEqual([e for e in events if "metrics" in str(e.get("log_format", "")) or "GET" in str(e)], [])


class _Collect(Protocol):
    """Writes ``data`` on connect, collects everything until the connection closes."""

    def __init__(self, data: bytes, done: Deferred[bytes]) -> None:
        self.data = data
        self.done = done
        self.received: list[bytes] = []

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.data)

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.done.callback(b"".join(self.received))


class RealSocketTests(TestCase):
    """The listener on a real socket on 127.0.0.1, with short limits: refusals reach the client intact."""

    timeout = 20

    def setUp(self) -> None:
        from twisted.internet import reactor

        self.reactor = reactor
        self.service = LBService(config.loads(CONFIG % "lbd", "lbd.toml"), reactor)
        self.site = metrics.make_site(self.service)
        self.site.request_deadline = 0.3
        self.site.linger = 0.5
        self.server_closed: list[Deferred[None]] = []
        build = self.site.buildProtocol

        def build_and_watch(addr: Any) -> Any:
            # The test ends only once the server side has closed too.
            proto = build(addr)
            closed: Deferred[None] = Deferred()
            self.server_closed.append(closed)
            lost = proto.connectionLost

            def connection_lost(reason: Any) -> None:
                lost(reason)
                closed.callback(None)

            proto.connectionLost = connection_lost
            return proto

        self.site.buildProtocol = build_and_watch  # type: ignore[method-assign]
        self.port = reactor.listenTCP(0, self.site, interface="127.0.0.1")  # type: ignore[arg-type]
        self.addCleanup(self.port.stopListening)

    @inlineCallbacks
    def exchange(self, data: bytes) -> Any:
        done: Deferred[bytes] = Deferred()
        endpoint = TCP4ClientEndpoint(self.reactor, "127.0.0.1", self.port.getHost().port)  # type: ignore[attr-defined]
        connected = endpoint.connect(Factory.forProtocol(lambda: _Collect(data, done)))
        connected.addErrback(done.errback)
        raw = yield done
        yield gatherResults(self.server_closed)
        return raw

    @inlineCallbacks
    def test_metrics(self) -> Any:
        """An HTTP/1.0 scrape gets the whole exposition, then the connection closes."""
        raw = yield self.exchange(b"GET /metrics HTTP/1.0\r\n\r\n")
        self.assertEqual((raw.split(b"\r\n")[0], raw.endswith(b"\n"), b"\nlbd_process_max_connections 4096.0\n" in raw),
                         (b"HTTP/1.0 200 OK", True, True))

    @inlineCallbacks
    def test_slow_request(self) -> Any:
        """A head that never completes gets 408 once the deadline passes."""
        start = self.reactor.seconds()
        raw = yield self.exchange(b"GET /metrics HTTP/1.1\r\nHost: lb\r\n")
        self.assertEqual((raw.split(b"\r\n")[0], self.reactor.seconds() - start >= 0.3),
                         (b"HTTP/1.1 408 Request Timeout", True))

    @inlineCallbacks
    def test_huge_request(self) -> Any:
        """A megabyte of header gets the whole 431 answer, not a reset that loses it."""
        raw = yield self.exchange(b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * (1 << 20))
        self.assertEqual(raw, b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\n"
                              b"Content-Length: 36\r\nConnection: close\r\n\r\n431 Request Header Fields Too Large\n")
