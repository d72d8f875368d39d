"""show stat over the admin commands: HAProxy 2.6's CSV read back with the csv module, JSON, filters."""
from __future__ import annotations

import csv
import io
import json

from twisted.trial.unittest import SynchronousTestCase

from tests.admin.support import make_service, run

# The header line of ``show stat`` from HAProxy 2.6.12 (Debian 12's haproxy package),
# up to its "-" column; HAProxy's stats modules (ssl_*, h2_*, h1_*) follow it there.
HAPROXY_26_HEADER = (
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,"
    "status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,"
    "type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,"
    "hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,"
    "comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,"
    "agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,"
    "agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,"
    "dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,"
    "ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,"
    "agg_server_check_status,agg_check_status,-,"
)


def parse(text: str) -> tuple[list[str], list[dict[str, str]]]:
    """A show stat answer as (header fields, rows as dicts), through the csv module."""
    assert text.endswith("\n\n"), "the answer must end with an empty line"
    lines = text[:-1].splitlines()
    assert lines[0].startswith("# ")
    header = next(csv.reader([lines[0][2:]]))
    rows = [dict(zip(header, values)) for values in csv.reader(io.StringIO("\n".join(lines[1:]) + "\n"))]
    return header, rows


class ShowStatTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.service = make_service()

    def test_header_is_haproxy_26(self) -> None:
        """The header is exactly the one Debian 12's HAProxy 2.6.12 prints."""
        header, _ = parse(run(self.service, "show stat", "user"))
        self.assertEqual(header, HAPROXY_26_HEADER[2:].split(","))

    def test_rows_in_order(self) -> None:
        """Rows are FRONTEND, then per backend its servers and its BACKEND."""
        _, rows = parse(run(self.service, "show stat"))
        self.assertEqual([(r["pxname"], r["svname"]) for r in rows], [
            ("www", "FRONTEND"), ("web", "web1"), ("web", "web2"), ("web", "BACKEND"),
            ("static", "s1"), ("static", "BACKEND")])

    def test_every_row_has_every_column(self) -> None:
        """Each row has as many columns as the header."""
        header, rows = parse(run(self.service, "show stat"))
        for r in rows:
            self.assertEqual(len(r), len(header))

    def test_status_texts(self) -> None:
        """Admin state shows in the status column: MAINT, DRAIN, and 'no check' when unchecked."""
        run(self.service, "disable server web/web2; set server static/s1 state drain")
        _, rows = parse(run(self.service, "show stat"))
        status = {(r["pxname"], r["svname"]): r["status"] for r in rows}
        self.assertEqual(status[("web", "web2")], "MAINT")
        self.assertEqual(status[("static", "s1")], "DRAIN")
        self.assertEqual(status[("www", "FRONTEND")], "OPEN")
        run(self.service, "enable server static/s1")
        _, rows = parse(run(self.service, "show stat"))
        self.assertEqual([r["status"] for r in rows if r["svname"] == "s1"], ["no check"])

    def test_weight_column(self) -> None:
        """A weight set at runtime shows in the weight column."""
        run(self.service, "set weight web/web1 9")
        _, rows = parse(run(self.service, "show stat"))
        self.assertEqual([r["weight"] for r in rows if r["svname"] == "web1"], ["9"])

    def test_counters(self) -> None:
        """Session counters show in scur and stot."""
        srv = self.service.pool.backends["web"].servers["web1"]
        srv.cur_sess, srv.tot_sess = 2, 40
        _, rows = parse(run(self.service, "show stat"))
        web1 = [r for r in rows if r["svname"] == "web1"][0]
        self.assertEqual((web1["scur"], web1["stot"]), ("2", "40"))

    def test_type_filter(self) -> None:
        """'show stat -1 4 -1' shows servers only, as HAProxy's type mask."""
        _, rows = parse(run(self.service, "show stat -1 4 -1"))
        self.assertEqual([r["svname"] for r in rows], ["web1", "web2", "s1"])

    def test_proxy_filter(self) -> None:
        """A proxy id keeps that proxy's rows."""
        iid = self.service.pool.backends["static"].iid
        _, rows = parse(run(self.service, "show stat %d -1 -1" % iid))
        self.assertEqual([r["svname"] for r in rows], ["s1", "BACKEND"])

    def test_no_maint_filter(self) -> None:
        """no-maint hides servers in maintenance."""
        run(self.service, "disable server web/web2")
        _, rows = parse(run(self.service, "show stat no-maint"))
        self.assertNotIn("web2", [r["svname"] for r in rows])

    def test_up_filter(self) -> None:
        """up hides servers that are down or in maintenance."""
        run(self.service, "disable server web/web2")
        be = self.service.pool.backends["web"]
        be.set_operational(be.servers["web1"], False)
        _, rows = parse(run(self.service, "show stat up"))
        self.assertEqual([r["svname"] for r in rows if r["pxname"] == "web"], ["BACKEND"])

    def test_bad_filter(self) -> None:
        """A filter that is not three numbers answers how to write one."""
        self.assertEqual(run(self.service, "show stat fancy"),
                         "'show stat' takes json, up, no-maint and the filter '<iid> <type> <sid>' "
                         "(-1 for all, as in 'show stat -1 4 -1').\n\n")

    def test_json(self) -> None:
        """show stat json is an array per row of HAProxy's typed fields."""
        out = run(self.service, "show stat json", "user")
        self.assertTrue(out.endswith("\n\n"))
        rows = json.loads(out)
        self.assertEqual(len(rows), 6)
        first = rows[0][0]
        self.assertEqual((first["objType"], first["field"], first["value"]),
                         ("Frontend", {"pos": 0, "name": "pxname"}, {"type": "str", "value": "www"}))
