"""HAProxy 2.6's show stat model: fields, row order, status texts, CSV and JSON."""
from __future__ import annotations

import csv
import io
import json
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from lbd import stats
from lbd.config import BackendConfig, FrontendConfig, HealthConfig, ServerConfig
from lbd.pool import Pool

HEADER_26 = (
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,"
    "status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,"
    "type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,"
    "hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,"
    "comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,"
    "agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,"
    "agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,"
    "dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,"
    "ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,"
    "agg_server_status,agg_server_check_status,agg_check_status,-,\n"
)


class FakeChecker:
    """Exposes what stats reads of a health checker."""

    def __init__(self, health: int, in_progress: bool = False) -> None:
        self.health = health
        self.in_progress = in_progress

    def restart(self) -> None:
        pass

    def stop(self) -> None:
        pass


def make_pool(clock: Clock | None = None, mode: str = "http") -> Pool:
    """Frontend www; backend web (checked, rise 2 fall 3: web1, web2, backup spare); backend static (unchecked)."""
    clock = clock or Clock()
    pool = Pool(clock, 4096)
    pool.add_backend(BackendConfig(
        name="web", mode=mode, balance="roundrobin", health=HealthConfig(type="http", rise=2, fall=3),
        servers=(
            ServerConfig("web1", "10.0.0.1", 80, weight=2),
            ServerConfig("web2", "10.0.0.2", 8080, maxconn=50),
            ServerConfig("spare", "10.0.0.3", 80, backup=True),
        ),
    ))
    pool.add_backend(BackendConfig(name="static", mode="tcp", balance="first",
                                   servers=(ServerConfig("s1", "10.0.1.1", 80),)))
    pool.add_frontend(FrontendConfig(name="www", binds=("*:80",), mode=mode, default_backend="web", maxconn=2000))
    return pool


def row_of(pool: Pool, px: str, sv: str, now: float | None = None) -> dict[str, Any]:
    for r in stats.stat_rows(pool, now):
        if r["pxname"] == px and r["svname"] == sv:
            return r
    raise AssertionError("no row %s/%s" % (px, sv))


class FieldsTests(TestCase):

    def test_header_is_haproxy_26(self) -> None:
        """The CSV header is HAProxy 2.6's, field for field, ending with its '-' delimiter."""
        self.assertEqual(stats.CSV_HEADER, HEADER_26)

    def test_field_count(self) -> None:
        """Debian 12's HAProxy 2.6.12 has 103 static fields, agg_check_status last."""
        self.assertEqual((len(stats.STAT_FIELDS), stats.STAT_FIELDS[-1]), (103, "agg_check_status"))

    def test_every_csv_line_has_every_column(self) -> None:
        """Every CSV line has as many columns as the header."""
        pool = make_pool()
        lines = stats.stat_csv(pool).splitlines()
        self.assertEqual({line.count(",") for line in lines}, {104})


class RowOrderTests(TestCase):

    def test_order(self) -> None:
        """Frontends first, then per backend its servers in configuration order and its BACKEND row."""
        names = [(r["pxname"], r["svname"]) for r in stats.stat_rows(make_pool())]
        self.assertEqual(names, [
            ("www", "FRONTEND"),
            ("web", "web1"), ("web", "web2"), ("web", "spare"), ("web", "BACKEND"),
            ("static", "s1"), ("static", "BACKEND"),
        ])

    def test_types_and_ids(self) -> None:
        """type is 0/1/2 for frontend/backend/server; iid names the proxy, sid the server."""
        got = [(r["svname"], r["type"], r["iid"], r["sid"]) for r in stats.stat_rows(make_pool())]
        self.assertEqual(got, [
            ("FRONTEND", 0, 3, 0),
            ("web1", 2, 1, 1), ("web2", 2, 1, 2), ("spare", 2, 1, 3), ("BACKEND", 1, 1, 0),
            ("s1", 2, 2, 1), ("BACKEND", 1, 2, 0),
        ])


class FrontendRowTests(TestCase):

    def test_counters(self) -> None:
        """A frontend row carries its sessions, limit, bytes, errors, rates and requests."""
        pool = make_pool()
        fe = pool.frontends["www"]
        fe.cur_sess, fe.max_sess, fe.tot_sess = 3, 7, 120
        fe.bytes_in, fe.bytes_out, fe.ereq, fe.req_tot = 1000, 50000, 2, 130
        fe.rate, fe.rate_max, fe.req_rate, fe.req_rate_max = 4, 9, 5, 11
        fe.hrsp = [0, 120, 3, 4, 2, 1]
        r = row_of(pool, "www", "FRONTEND")
        self.assertEqual(
            {k: r[k] for k in ("scur", "smax", "slim", "stot", "bin", "bout", "ereq", "status", "rate", "rate_max",
                               "req_rate", "req_rate_max", "req_tot", "hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx",
                               "hrsp_5xx", "hrsp_other", "mode", "pid", "conn_tot")},
            {"scur": 3, "smax": 7, "slim": 2000, "stot": 120, "bin": 1000, "bout": 50000, "ereq": 2, "status": "OPEN",
             "rate": 4, "rate_max": 9, "req_rate": 5, "req_rate_max": 11, "req_tot": 130, "hrsp_1xx": 0,
             "hrsp_2xx": 120, "hrsp_3xx": 3, "hrsp_4xx": 4, "hrsp_5xx": 2, "hrsp_other": 1, "mode": "http", "pid": 1,
             "conn_tot": 120},
        )

    def test_stop_while_stopping(self) -> None:
        """A frontend reads STOP once lbd is stopping."""
        pool = make_pool()
        pool.stopping = True
        self.assertEqual(row_of(pool, "www", "FRONTEND")["status"], "STOP")

    def test_tcp_has_no_http_columns(self) -> None:
        """In tcp mode the hrsp_* columns are empty, as HAProxy leaves them."""
        r = row_of(make_pool(mode="tcp"), "www", "FRONTEND")
        self.assertEqual([k for k in r if k.startswith("hrsp_")], [])


class ServerStatusTests(TestCase):

    def test_up_checked(self) -> None:
        """A checked server that is up reads UP."""
        self.assertEqual(row_of(make_pool(), "web", "web1")["status"], "UP")

    def test_no_check(self) -> None:
        """An unchecked server reads 'no check'."""
        self.assertEqual(row_of(make_pool(), "static", "s1")["status"], "no check")

    def test_health_disabled_is_no_check(self) -> None:
        """'disable health' makes a server read 'no check' and drops its check columns."""
        pool = make_pool()
        pool.backends["web"].servers["web1"].health_disabled = True
        r = row_of(pool, "web", "web1")
        self.assertEqual((r["status"], "check_status" in r), ("no check", False))

    def test_maint(self) -> None:
        """A server in maintenance reads MAINT, whatever its health."""
        pool = make_pool()
        be = pool.backends["web"]
        be.set_operational(be.servers["web1"], False)
        be.set_maint(be.servers["web1"], True)
        self.assertEqual(row_of(pool, "web", "web1")["status"], "MAINT")

    def test_drain(self) -> None:
        """A draining server reads DRAIN."""
        pool = make_pool()
        be = pool.backends["web"]
        be.set_drain(be.servers["web1"], True)
        self.assertEqual(row_of(pool, "web", "web1")["status"], "DRAIN")

    def test_down(self) -> None:
        """A server the checks took down reads DOWN."""
        pool = make_pool()
        be = pool.backends["web"]
        be.set_operational(be.servers["web2"], False)
        self.assertEqual(row_of(pool, "web", "web2")["status"], "DOWN")

    def test_going_down(self) -> None:
        """An UP server with one failed check of fall 3 reads 'UP 2/3' (health one below rise+fall-1)."""
        pool = make_pool()
        pool.backends["web"].servers["web1"].checker = FakeChecker(health=3)
        self.assertEqual(row_of(pool, "web", "web1")["status"], "UP 2/3")

    def test_going_down_further(self) -> None:
        """Two failed checks of fall 3 read 'UP 1/3'."""
        pool = make_pool()
        pool.backends["web"].servers["web1"].checker = FakeChecker(health=2)
        self.assertEqual(row_of(pool, "web", "web1")["status"], "UP 1/3")

    def test_fully_healthy(self) -> None:
        """At full health (rise+fall-1) an UP server reads plain UP."""
        pool = make_pool()
        pool.backends["web"].servers["web1"].checker = FakeChecker(health=4)
        self.assertEqual(row_of(pool, "web", "web1")["status"], "UP")

    def test_going_up(self) -> None:
        """A DOWN server with one good check of rise 2 reads 'DOWN 1/2'."""
        pool = make_pool()
        be = pool.backends["web"]
        srv = be.servers["web2"]
        be.set_operational(srv, False)
        srv.checker = FakeChecker(health=1)
        self.assertEqual(row_of(pool, "web", "web2")["status"], "DOWN 1/2")

    def test_drain_going_down(self) -> None:
        """A draining server losing checks reads 'DRAIN 2/3'."""
        pool = make_pool()
        be = pool.backends["web"]
        srv = be.servers["web1"]
        be.set_drain(srv, True)
        srv.checker = FakeChecker(health=3)
        self.assertEqual(row_of(pool, "web", "web1")["status"], "DRAIN 2/3")


class ServerCheckColumnsTests(TestCase):

    def test_initializing(self) -> None:
        """Before its first check a server reads INI, 'Initializing', and no code or duration."""
        r = row_of(make_pool(), "web", "web1")
        self.assertEqual(
            (r["check_status"], r["check_desc"], "check_code" in r, "check_duration" in r,
             r["check_rise"], r["check_fall"]),
            ("INI", "Initializing", False, False, 2, 3),
        )

    def test_l7ok(self) -> None:
        """An HTTP check result shows its status, code, duration in ms and HAProxy's description."""
        pool = make_pool()
        srv = pool.backends["web"].servers["web1"]
        srv.check_status, srv.check_code, srv.check_duration = "L7OK", 200, 0.0123
        srv.check_desc = "HTTP status check returned code <200>"
        r = row_of(pool, "web", "web1")
        self.assertEqual(
            (r["check_status"], r["check_code"], r["check_duration"], r["check_desc"], r["last_chk"]),
            ("L7OK", 200, 12, "Layer7 check passed", "HTTP status check returned code <200>"),
        )

    def test_l4_has_no_code(self) -> None:
        """A layer 4 result carries no check_code."""
        pool = make_pool()
        srv = pool.backends["web"].servers["web1"]
        srv.check_status, srv.check_code, srv.check_duration = "L4CON", None, 0.001
        r = row_of(pool, "web", "web1")
        self.assertEqual((r["check_status"], "check_code" in r, r["check_desc"]),
                         ("L4CON", False, "Layer4 connection problem"))

    def test_in_progress(self) -> None:
        """A check running now is marked '* ' before the last status, as HAProxy."""
        pool = make_pool()
        srv = pool.backends["web"].servers["web1"]
        srv.check_status = "L7STS"
        srv.checker = FakeChecker(health=4, in_progress=True)
        self.assertEqual(row_of(pool, "web", "web1")["check_status"], "* L7STS")

    def test_unchecked_has_no_check_columns(self) -> None:
        """An unchecked server leaves every check column empty, chkfail and downtime included."""
        r = row_of(make_pool(), "static", "s1")
        self.assertEqual([k for k in ("check_status", "check_desc", "chkfail", "chkdown", "downtime",
                                      "check_rise") if k in r], [])

    def test_failures(self) -> None:
        """chkfail and chkdown count failed checks and UP to DOWN transitions."""
        pool = make_pool()
        be = pool.backends["web"]
        srv = be.servers["web2"]
        srv.chkfail = 5
        be.set_operational(srv, False)
        r = row_of(pool, "web", "web2")
        self.assertEqual((r["chkfail"], r["chkdown"]), (5, 1))


class TimeColumnsTests(TestCase):

    def test_lastchg_and_open_downtime(self) -> None:
        """A server DOWN since t=10 reads lastchg 15 and downtime 15 at t=25 (the open period counts)."""
        clock = Clock()
        pool = make_pool(clock)
        be = pool.backends["web"]
        clock.advance(10)
        be.set_operational(be.servers["web2"], False)
        clock.advance(15)
        r = row_of(pool, "web", "web2")
        self.assertEqual((r["lastchg"], r["downtime"]), (15, 15))

    def test_downtime_after_recovery(self) -> None:
        """DOWN from t=10 to t=30 then UP: at t=40 downtime is 20 and lastchg 10."""
        clock = Clock()
        pool = make_pool(clock)
        be = pool.backends["web"]
        srv = be.servers["web2"]
        clock.advance(10)
        be.set_operational(srv, False)
        clock.advance(20)
        be.set_operational(srv, True)
        clock.advance(10)
        r = row_of(pool, "web", "web2")
        self.assertEqual((r["lastchg"], r["downtime"]), (10, 20))

    def test_now_argument(self) -> None:
        """``now`` dates the rows instead of the pool's clock."""
        pool = make_pool()
        self.assertEqual(row_of(pool, "web", "BACKEND", now=42.0)["lastchg"], 42)


class BackendRowTests(TestCase):

    def test_servers_counted(self) -> None:
        """act and bck count usable active and backup servers; weight sums the serving ones."""
        pool = make_pool()
        be = pool.backends["web"]
        be.set_maint(be.servers["web2"], True)
        r = row_of(pool, "web", "BACKEND")
        self.assertEqual((r["act"], r["bck"], r["weight"], r["status"], r["algo"]), (1, 1, 2, "UP", "roundrobin"))

    def test_down_when_no_server(self) -> None:
        """With every server down the backend reads DOWN and accrues downtime."""
        clock = Clock()
        pool = make_pool(clock)
        be = pool.backends["web"]
        clock.advance(5)
        for srv in be.servers.values():
            be.set_operational(srv, False)
        clock.advance(7)
        r = row_of(pool, "web", "BACKEND")
        self.assertEqual((r["status"], r["act"], r["bck"], r["downtime"], r["chkdown"]), ("DOWN", 0, 0, 7, 3))

    def test_time_averages_from_histograms(self) -> None:
        """ctime, rtime and ttime are the mean of the backend's histograms, in ms."""
        pool = make_pool()
        be = pool.backends["web"]
        for v in (0.001, 0.003):
            be.connect_time.observe(v)
        be.response_time.observe(0.020)
        be.total_time.observe(0.5)
        r = row_of(pool, "web", "BACKEND")
        self.assertEqual((r["ctime"], r["rtime"], r["ttime"]), (2, 20, 500))

    def test_counters(self) -> None:
        """A backend row carries its queue, sessions, errors, warnings and responses."""
        pool = make_pool()
        be = pool.backends["web"]
        be.qmax, be.cur_sess, be.max_sess, be.tot_sess, be.lbtot = 4, 2, 9, 300, 300
        be.econ, be.eresp, be.wretr, be.wredis, be.req_tot = 1, 2, 3, 4, 310
        be.hrsp = [0, 300, 0, 5, 5, 0]
        r = row_of(pool, "web", "BACKEND")
        self.assertEqual(
            [r[k] for k in ("qcur", "qmax", "scur", "smax", "stot", "lbtot", "econ", "eresp", "wretr", "wredis",
                            "req_tot", "hrsp_2xx", "hrsp_5xx")],
            [0, 4, 2, 9, 300, 300, 1, 2, 3, 4, 310, 300, 5],
        )


class CSVTests(TestCase):

    def test_exact_lines(self) -> None:
        """show stat prints HAProxy's CSV: empty columns for fields that do not apply, a trailing '-,'."""
        clock = Clock()
        pool = make_pool(clock, mode="tcp")
        clock.advance(30)
        out = stats.stat_csv(pool).splitlines()
        self.assertEqual(out[0] + "\n", HEADER_26)
        self.assertEqual(out[1], "www,FRONTEND,,,0,0,2000,0,0,0,0,0,0,,,,,OPEN,,,,,,,,,1,3,0,,,,0,0,0,0,,,,,,,,,,,0,0,0"
                                 ",,,0,0,0,0,,,,,,,,,,,,,,,,,,,,,tcp,,0,0,0,,0,0,0,,,,,,,,,,,0,,,,,,,,,-,")
        self.assertEqual(out[6], "static,s1,0,0,0,0,,0,0,0,,0,,0,0,0,0,no check,1,1,0,,,30,,,1,2,1,,0,,2,0,,0,,,,,,,,,"
                                 ",,,,,0,0,,,,,,,,,,,,,,,,,,,,,,,10.0.1.1:80,,tcp,,,,,,,,0,,,,,0,,,,,,0,0,0,0,,1,,,,-,")

    def test_quotes_commas(self) -> None:
        """A value with a comma or a quote is quoted, quotes doubled, so CSV readers split it right."""
        pool = make_pool()
        srv = pool.backends["web"].servers["web1"]
        srv.check_status, srv.check_desc = "L7STS", 'HTTP status 503, body "down"'
        rows = list(csv.reader(io.StringIO(stats.stat_csv(pool))))
        header = [h.lstrip("# ") for h in rows[0]]
        web1 = dict(zip(header, rows[2]))
        self.assertEqual(web1["last_chk"], 'HTTP status 503, body "down"')

    def test_rows_or_pool(self) -> None:
        """stat_csv takes the pool or already selected rows, with the same result."""
        pool = make_pool()
        self.assertEqual(stats.stat_csv(pool, 5.0), stats.stat_csv(stats.stat_rows(pool, 5.0)))

    def test_selected_rows(self) -> None:
        """Given a selection of rows, stat_csv prints the header and only those."""
        pool = make_pool()
        rows = [r for r in stats.stat_rows(pool) if r["svname"] == "BACKEND"]
        out = stats.stat_csv(rows).splitlines()
        self.assertEqual([line.split(",")[:2] for line in out[1:]], [["web", "BACKEND"], ["static", "BACKEND"]])


class JSONTests(TestCase):

    def test_structure(self) -> None:
        """show stat json is a list per row of typed, tagged fields, as HAProxy's."""
        doc = json.loads(stats.stat_json(make_pool()))
        self.assertEqual(doc[0][0], {
            "objType": "Frontend", "proxyId": 3, "id": 0, "field": {"pos": 0, "name": "pxname"}, "processNum": 1,
            "tags": {"origin": "Key", "nature": "Name", "scope": "Service"},
            "value": {"type": "str", "value": "www"},
        })

    def test_server_field(self) -> None:
        """A server's stot is a u64 counter with its position in the CSV."""
        doc = json.loads(stats.stat_json(make_pool()))
        stot = [f for f in doc[1] if f["field"]["name"] == "stot"][0]
        self.assertEqual(stot, {
            "objType": "Server", "proxyId": 1, "id": 1, "field": {"pos": 7, "name": "stot"}, "processNum": 1,
            "tags": {"origin": "Metric", "nature": "Counter", "scope": "Process"},
            "value": {"type": "u64", "value": 0},
        })

    def test_empty_fields_skipped(self) -> None:
        """Fields a row leaves empty are absent from its JSON, as HAProxy skips them."""
        doc = json.loads(stats.stat_json(make_pool(mode="tcp")))
        names = {f["field"]["name"] for f in doc[0]}
        self.assertEqual(("qcur" in names, "hrsp_2xx" in names, "scur" in names), (False, False, True))

    def test_one_array_per_row(self) -> None:
        """There is one array per row, in row order."""
        pool = make_pool()
        doc = json.loads(stats.stat_json(pool))
        self.assertEqual([(a[0]["value"]["value"], a[1]["value"]["value"]) for a in doc],
                         [(r["pxname"], r["svname"]) for r in stats.stat_rows(pool)])
