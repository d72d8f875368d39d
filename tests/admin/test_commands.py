"""Every admin command's answer, at each level, run in memory (no socket)."""
from __future__ import annotations

import json
import os

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from lbd.admin import commands
from lbd.pool import DRAIN, MAINT, UP
from tests.admin.support import BASE, FakeSession, make_service, run, write_config

HELP_USER = """\
The following commands are valid at this level:
  get weight <bk>/<srv>                   : report a server's current weight
  set severity-output [none|number|string]: set presence of severity level in feedback information
  set timeout cli <delay>                 : change this session's idle timeout
  show backend                            : list backends in the current running config
  show cli level                          : display the level of the current CLI session
  show info [json]                        : report information about the running process
  show servers state [<backend>]          : dump volatile server information (all or for a single backend)
  show stat [json|up|no-maint]*           : report counters for each proxy and server
  user                                    : lower the level of the current CLI session to user
  help [<command>]                        : list matching or all commands
  prompt                                  : toggle interactive mode with prompt
  quit                                    : disconnect

"""

HELP_OPERATOR_EXTRA = """\
  disable health <bk>/<srv>               : disable health checks (the server counts as up)
  disable server <bk>/<srv>               : put a server in maintenance (as set server ... state maint)
  enable health <bk>/<srv>                : enable health checks
  enable server <bk>/<srv>                : take a server out of maintenance or drain
  operator                                : lower the level of the current CLI session to operator
  set server <bk>/<srv> [opts]            : change a server's state (ready|drain|maint) or weight
  set weight <bk>/<srv> <w>[%]            : change a server's weight
  shutdown sessions server <bk>/<srv>     : kill sessions on a server
"""

HELP_ADMIN_EXTRA = """\
  add server <bk>/<srv> <addr>:<port> ... : create a server, in maintenance until enabled ([weight <w>] [backup] [check])
  del server <bk>/<srv>                   : remove a server in maintenance with no connection
  reload                                  : re-read the configuration file and apply the changes
  set maxconn frontend <frontend> <value> : change a frontend's maxconn setting
  set maxconn global <value>              : change the per-process maxconn setting
"""

SERVERS_STATE_HEADER = (
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
    "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state "
    "srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl "
    "srv_check_port srv_check_addr srv_agent_addr srv_agent_port"
)

# One example line per command, and its level.
EXAMPLES = [
    ("help", "user"),
    ("prompt", "user"),
    ("quit", "user"),
    ("user", "user"),
    ("operator", "operator"),
    ("show info", "user"),
    ("show stat", "user"),
    ("show servers state", "user"),
    ("show backend", "user"),
    ("show cli level", "user"),
    ("get weight web/web1", "user"),
    ("set severity-output number", "user"),
    ("set timeout cli 30", "user"),
    ("disable server web/web1", "operator"),
    ("enable server web/web1", "operator"),
    ("set server web/web1 state drain", "operator"),
    ("set server web/web1 weight 3", "operator"),
    ("set weight web/web1 3", "operator"),
    ("disable health web/web1", "operator"),
    ("enable health web/web1", "operator"),
    ("shutdown sessions server web/web1", "operator"),
    ("add server web/web9 10.0.0.9:80", "admin"),
    ("del server web/web2", "admin"),
    ("reload", "admin"),
    ("set maxconn frontend www 10", "admin"),
    ("set maxconn global 10", "admin"),
]


class HelpTests(SynchronousTestCase):
    def test_help_user(self) -> None:
        """At user level, help lists only the user commands, in HAProxy's layout."""
        self.assertEqual(run(make_service(), "help", "user"), HELP_USER)

    def test_help_operator(self) -> None:
        """At operator level, help adds the server state commands."""
        expected = _merge(HELP_USER, HELP_OPERATOR_EXTRA)
        self.assertEqual(run(make_service(), "help", "operator"), expected)

    def test_help_admin(self) -> None:
        """At admin level, help lists every command."""
        expected = _merge(_merge(HELP_USER, HELP_OPERATOR_EXTRA), HELP_ADMIN_EXTRA)
        self.assertEqual(run(make_service(), "help", "admin"), expected)

    def test_help_filter(self) -> None:
        """help followed by words lists the matching commands and the session commands."""
        self.assertEqual(run(make_service(), "help show stat"), (
            "The following commands are valid at this level:\n"
            "  show stat [json|up|no-maint]*           : report counters for each proxy and server\n"
            "  help [<command>]                        : list matching or all commands\n"
            "  prompt                                  : toggle interactive mode with prompt\n"
            "  quit                                    : disconnect\n\n"))

    def test_unknown_command(self) -> None:
        """An unknown command answers 'Unknown command' followed by the help of the level."""
        out = run(make_service(), "frobnicate now", "user")
        self.assertEqual(out, "Unknown command. Please enter one of the following commands only:\n"
                         + HELP_USER.split("\n", 1)[1])

    def test_unknown_is_an_error(self) -> None:
        """An unknown command is an error for severity-output (lbctl exits 1)."""
        self.assertTrue(commands.execute(make_service(), "frobnicate")[0].error)

    def test_empty_command_between_semicolons(self) -> None:
        """An empty command between ';' answers 'Unknown command', as HAProxy does."""
        out = run(make_service(), "show cli level;;show cli level", "user")
        self.assertTrue(out.startswith("user\n\nUnknown command. Please enter"))
        self.assertTrue(out.endswith("\n\nuser\n\n"))


def _merge(base: str, extra: str) -> str:
    """Help text with extra lines sorted in, keeping help/prompt/quit last."""
    lines = base.rstrip("\n").split("\n")
    head, body, tail = lines[0], lines[1:-3], lines[-3:]
    body = sorted(body + extra.rstrip("\n").split("\n"), key=lambda line: line.split(":")[0].strip())
    return "\n".join([head] + body + tail) + "\n\n"


class LevelTests(SynchronousTestCase):
    def test_every_command_at_every_level(self) -> None:
        """Each command answers 'Permission denied' below its level and runs at or above it."""
        for line, level in EXAMPLES:
            for session_level in commands.LEVELS:
                service = make_service()
                out = run(service, line, session_level)
                allowed = commands.rank(session_level) >= commands.rank(level)
                if allowed:
                    self.assertNotEqual(out, "Permission denied\n\n", (line, session_level))
                else:
                    self.assertEqual(out, "Permission denied\n\n", (line, session_level))

    def test_table_levels_match_spec(self) -> None:
        """The table's levels are SPEC section 4's."""
        for line, level in EXAMPLES:
            self.assertEqual(commands.find(line.split()).level, level, line)

    def test_denied_changes_nothing(self) -> None:
        """A refused command leaves the server as it was."""
        service = make_service()
        run(service, "disable server web/web1", "user")
        self.assertEqual(service.pool.backends["web"].servers["web1"].state, UP)

    def test_show_cli_level(self) -> None:
        """show cli level names the session's level."""
        self.assertEqual(run(make_service(), "show cli level", "operator"), "operator\n\n")

    def test_lower_level(self) -> None:
        """'user' lowers the session's level for the commands that follow."""
        self.assertEqual(run(make_service(), "user; show cli level; disable server web/web1"),
                         "\nuser\n\nPermission denied\n\n")

    def test_cannot_raise_level(self) -> None:
        """'operator' from a user session is refused."""
        self.assertEqual(run(make_service(), "operator; show cli level", "user"),
                         "Permission denied\n\nuser\n\n")


class ParsingTests(SynchronousTestCase):
    def test_split_semicolons(self) -> None:
        """A line splits into commands at ';' and into words at blanks."""
        self.assertEqual(commands.split_commands("show  info ;show stat"), [["show", "info"], ["show", "stat"]])

    def test_backslash_escapes(self) -> None:
        """A backslash keeps the next character, ';' and blanks included."""
        self.assertEqual(commands.split_commands(r"a\;b c\ d"), [["a;b", "c d"]])

    def test_answers_in_order(self) -> None:
        """Several commands on a line answer in order, each ended by an empty line."""
        self.assertEqual(run(make_service(), "get weight web/web1;get weight web/web2"),
                         "2 (initial 2)\n\n1 (initial 1)\n\n")

    def test_quit_stops_the_line(self) -> None:
        """Commands after quit on the same line are not run."""
        service = make_service()
        replies = commands.execute(service, "quit; disable server web/web1")
        self.assertEqual(len(replies), 1)
        self.assertEqual(service.pool.backends["web"].servers["web1"].state, UP)


class ShowTests(SynchronousTestCase):
    def test_show_backend(self) -> None:
        """show backend lists the backends under '# name'."""
        self.assertEqual(run(make_service(), "show backend"), "# name\nweb\nstatic\n\n")

    def test_show_info_fields(self) -> None:
        """show info has one 'Key: value' a line with SPEC's and HAProxy's keys."""
        service = make_service()
        service.pool.cur_conns = 3
        service.pool.cum_conns = 42
        lines = run(service, "show info", "user").split("\n")
        self.assertEqual(lines[-2:], ["", ""])
        info = dict(line.split(": ", 1) for line in lines[:-2])
        self.assertEqual(info["Name"], "lbd")
        self.assertEqual(info["Pid"], str(os.getpid()))
        self.assertEqual(info["CurrConns"], "3")
        self.assertEqual(info["CumConns"], "42")
        self.assertEqual(info["MaxConn"], "4096")
        self.assertEqual(info["Maxconn"], "4096")
        self.assertIn("Version", info)
        self.assertIn("Uptime_sec", info)

    def test_show_info_uptime(self) -> None:
        """Uptime counts from the pool's start on the injected clock."""
        reactor = MemoryReactorClock()
        service = make_service(reactor=reactor)
        reactor.advance(90061)
        info = dict(line.split(": ", 1) for line in run(service, "show info").split("\n") if ": " in line)
        self.assertEqual((info["Uptime_sec"], info["Uptime"]), ("90061", "1d 1h01m01s"))

    def test_show_info_json(self) -> None:
        """show info json is HAProxy's list of typed fields."""
        out = run(make_service(), "show info json")
        fields = json.loads(out)
        first = fields[0]
        self.assertEqual(first, {"field": {"pos": 0, "name": "Name"}, "processNum": 1,
                                 "tags": {"origin": "Product", "nature": "Output", "scope": "Service"},
                                 "value": {"type": "str", "value": "lbd"}})
        names = [f["field"]["name"] for f in fields]
        self.assertIn("CurrConns", names)

    def test_show_servers_state(self) -> None:
        """show servers state is HAProxy's version 1 format."""
        reactor = MemoryReactorClock()
        service = make_service(reactor=reactor)
        reactor.advance(7)
        run(service, "disable server web/web2; set weight web/web1 5")
        reactor.advance(3)
        self.assertEqual(run(service, "show servers state", "user"), "\n".join([
            "1",
            SERVERS_STATE_HEADER,
            "1 web 1 web1 10.0.0.1 2 0 5 2 10 1 0 2 6 0 0 0 - 80 - 0 0 - - 0",
            "1 web 2 web2 10.0.0.2 2 1 1 1 3 1 0 2 14 0 0 0 - 8080 - 0 0 - - 0",
            "2 static 1 s1 10.0.1.1 2 0 1 1 10 1 0 2 0 0 0 0 - 80 - 0 0 - - 0",
        ]) + "\n\n")

    def test_show_servers_state_one_backend(self) -> None:
        """show servers state BACKEND limits the dump to that backend."""
        out = run(make_service(), "show servers state static")
        self.assertEqual(out.split("\n")[2:], ["2 static 1 s1 10.0.1.1 2 0 1 1 0 1 0 2 0 0 0 0 - 80 - 0 0 - - 0", "", ""])

    def test_show_servers_state_check_results(self) -> None:
        """A failed check shows as HAProxy's L4CON (8), result FAILED (2), server stopped (0)."""
        service = make_service()
        be = service.pool.backends["web"]
        srv = be.servers["web2"]
        srv.check_status = "L4CON"
        be.set_operational(srv, False, "Connection refused")
        line = run(service, "show servers state web").split("\n")[3]
        self.assertEqual(line.split()[5:14], ["0", "0", "1", "1", "0", "8", "2", "0", "6"])

    def test_show_servers_state_unknown(self) -> None:
        """An unknown backend answers HAProxy's "Can't find backend."."""
        self.assertEqual(run(make_service(), "show servers state nope"), "Can't find backend.\n\n")

    def test_get_weight(self) -> None:
        """get weight reports the current and the configured weight."""
        service = make_service()
        run(service, "set weight web/web1 7")
        self.assertEqual(run(service, "get weight web/web1", "user"), "7 (initial 2)\n\n")


class ServerStateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.service = make_service()
        self.be = self.service.pool.backends["web"]
        self.web1 = self.be.servers["web1"]

    def test_disable_server(self) -> None:
        """disable server puts the server in MAINT and answers nothing."""
        self.assertEqual(run(self.service, "disable server web/web1", "operator"), "\n")
        self.assertEqual(self.web1.state, MAINT)
        self.assertNotIn(self.web1, self.be.active)

    def test_enable_server(self) -> None:
        """enable server brings a server back from MAINT."""
        run(self.service, "disable server web/web1")
        self.assertEqual(run(self.service, "enable server web/web1", "operator"), "\n")
        self.assertEqual(self.web1.state, UP)
        self.assertIn(self.web1, self.be.active)

    def test_enable_clears_drain(self) -> None:
        """enable server also ends a drain, as HAProxy's srv_adm_set_ready."""
        run(self.service, "set server web/web1 state drain")
        run(self.service, "enable server web/web1")
        self.assertEqual(self.web1.state, UP)

    def test_no_such_backend(self) -> None:
        """An unknown backend answers 'No such backend.'."""
        self.assertEqual(run(self.service, "disable server nope/web1"), "No such backend.\n\n")

    def test_no_such_server(self) -> None:
        """An unknown server answers 'No such server.'."""
        self.assertEqual(run(self.service, "enable server web/nope"), "No such server.\n\n")

    def test_require_backend_server(self) -> None:
        """A missing or slash-less argument answers "Require 'backend/server'."."""
        for line in ("disable server", "disable server web", "set server web state maint",
                     "set weight web", "disable health", "shutdown sessions server web", "get weight web"):
            self.assertEqual(run(self.service, line), "Require 'backend/server'.\n\n", line)

    def test_set_state_drain(self) -> None:
        """state drain keeps the server out of new traffic but not in maintenance."""
        self.assertEqual(run(self.service, "set server web/web1 state drain"), "\n")
        self.assertEqual(self.web1.state, DRAIN)
        self.assertNotIn(self.web1, self.be.active)

    def test_set_state_maint_then_ready(self) -> None:
        """state maint then state ready goes MAINT then UP."""
        run(self.service, "set server web/web1 state maint")
        self.assertEqual(self.web1.state, MAINT)
        run(self.service, "set server web/web1 state ready")
        self.assertEqual(self.web1.state, UP)

    def test_maint_clears_drain(self) -> None:
        """Going to maintenance ends a drain, so ready later means UP."""
        run(self.service, "set server web/web1 state drain; set server web/web1 state maint")
        self.assertEqual((self.web1.maint, self.web1.drain), (True, False))

    def test_set_state_bad(self) -> None:
        """An unknown state answers HAProxy's list of states."""
        for line in ("set server web/web1 state up", "set server web/web1 state"):
            self.assertEqual(run(self.service, line),
                             "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n\n")

    def test_set_server_usage(self) -> None:
        """set server without a known setting answers its usage."""
        self.assertEqual(run(self.service, "set server web/web1 addr 1.2.3.4"),
                         "usage: set server <backend>/<server> state | weight\n\n")

    def test_shutdown_sessions(self) -> None:
        """shutdown sessions server aborts that server's connections only."""
        mine, other = FakeSession(), FakeSession()
        self.web1.sessions.add(mine)
        self.be.servers["web2"].sessions.add(other)
        self.assertEqual(run(self.service, "shutdown sessions server web/web1", "operator"), "\n")
        self.assertEqual((mine.aborted, other.aborted), (True, False))


class WeightTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.service = make_service()
        self.web1 = self.service.pool.backends["web"].servers["web1"]

    def test_absolute(self) -> None:
        """An absolute weight sets the operator weight and the effective one."""
        self.assertEqual(run(self.service, "set server web/web1 weight 10"), "\n")
        self.assertEqual((self.web1.uweight, self.web1.eweight, self.web1.iweight), (10, 10, 2))

    def test_percent(self) -> None:
        """W% is relative to the configured weight."""
        run(self.service, "set weight web/web1 150%")
        self.assertEqual(self.web1.uweight, 3)

    def test_percent_capped(self) -> None:
        """A percentage above 256 in total is capped at 256."""
        run(self.service, "set weight web/web1 100000%")
        self.assertEqual(self.web1.uweight, 256)

    def test_zero_takes_no_traffic(self) -> None:
        """Weight 0 takes the server out of the balancing."""
        run(self.service, "set weight web/web1 0")
        self.assertNotIn(self.web1, self.service.pool.backends["web"].active)

    def test_errors(self) -> None:
        """Bad weights answer HAProxy's texts and change nothing."""
        cases = {
            "set weight web/web1": "Require <weight> or <weight%>.",
            "set server web/web1 weight": "Require <weight> or <weight%>.",
            "set weight web/web1 abc": "Empty weight string empty or preceded by garbage",
            "set weight web/web1 300": "Absolute weight can only be between 0 and 256 inclusive.",
            "set weight web/web1 -1": "Absolute weight can only be between 0 and 256 inclusive.",
            "set weight web/web1 -5%": "Relative weight must be positive.",
            "set weight web/web1 5x": "Trailing garbage in weight string",
        }
        for line, text in cases.items():
            self.assertEqual(run(self.service, line), text + "\n\n", line)
        self.assertEqual(self.web1.uweight, 2)

    def test_static_backend(self) -> None:
        """A static-rr backend only takes 0% and 100%, as HAProxy."""
        self.assertEqual(run(self.service, "set weight static/s1 3"),
                         "Backend is using a static LB algorithm and only accepts weights '0%' and '100%'.\n\n")
        self.assertEqual(run(self.service, "set weight static/s1 0%"), "\n")


class HealthTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.service = make_service()
        self.be = self.service.pool.backends["web"]
        self.web2 = self.be.servers["web2"]
        self.service.start_checker(self.web2)

    def test_disable_health(self) -> None:
        """disable health stops the check and counts the server as UP."""
        self.be.set_operational(self.web2, False)
        self.assertEqual(run(self.service, "disable health web/web2", "operator"), "\n")
        self.assertEqual(self.service.checks, [("start", "web/web2"), ("stop", "web/web2")])
        self.assertTrue(self.web2.health_disabled)
        self.assertEqual(self.web2.state, UP)

    def test_enable_health(self) -> None:
        """enable health starts the check again."""
        run(self.service, "disable health web/web2")
        self.assertEqual(run(self.service, "enable health web/web2", "operator"), "\n")
        self.assertEqual(self.service.checks[-1], ("start", "web/web2"))
        self.assertFalse(self.web2.health_disabled)

    def test_disable_health_twice(self) -> None:
        """Disabling a disabled check does nothing more."""
        run(self.service, "disable health web/web2; disable health web/web2")
        self.assertEqual(self.service.checks, [("start", "web/web2"), ("stop", "web/web2")])


class AddDelTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.service = make_service()
        self.be = self.service.pool.backends["web"]

    def test_add_server(self) -> None:
        """add server registers a new server in maintenance."""
        self.assertEqual(run(self.service, "add server web/web3 10.0.0.3:81 weight 4 backup"),
                         "New server registered.\n\n")
        srv = self.be.servers["web3"]
        self.assertEqual((srv.host, srv.port, srv.uweight, srv.cfg.backup, srv.state, srv.added),
                         ("10.0.0.3", 81, 4, True, MAINT, True))
        self.assertEqual(list(self.be.servers), ["web1", "web2", "web3"])

    def test_added_then_enabled_takes_traffic(self) -> None:
        """An added server joins the balancing once enabled."""
        run(self.service, "add server web/web3 10.0.0.3:81")
        self.assertNotIn(self.be.servers["web3"], self.be.active)
        run(self.service, "enable server web/web3")
        self.assertIn(self.be.servers["web3"], self.be.active)

    def test_add_with_check(self) -> None:
        """add server ... check starts a health check on the new server."""
        run(self.service, "add server web/web3 10.0.0.3:81 check")
        self.assertTrue(self.be.servers["web3"].checked)
        self.assertEqual(self.service.checks, [("start", "web/web3")])

    def test_add_errors(self) -> None:
        """Bad add server lines answer a reason and add nothing."""
        cases = {
            "add server web": "Require 'backend/server'.",
            "add server nope/x 10.0.0.3:80": "No such backend.",
            "add server web/web1 10.0.0.3:80": "Already exists a server with the same name in backend.",
            "add server web/web3": "'server' expects <name> and <addr>[:<port>] as arguments.",
            "add server web/web3 10.0.0.3": "Invalid address: '10.0.0.3' is not ADDRESS:PORT.",
            "add server web/web3 10.0.0.3:99999": "Invalid address: '10.0.0.3:99999' has no valid port (1-65535).",
            "add server web/web3 10.0.0.3:80 weight 999": "weight of server web3 is not within 0 and 256 (999).",
            "add server web/web3 10.0.0.3:80 weight": "'weight' expects an integer argument.",
            "add server web/web3 10.0.0.3:80 tfo":
                "unknown keyword 'tfo'; expected 'weight <w>', 'backup' or 'check'.",
            "add server static/s2 10.0.0.3:80 check":
                "'check' needs health checks configured for backend static ([backends.static.health]).",
            "add server web/bad/name 10.0.0.3:80": "Invalid server name 'bad/name' (letters, digits, '_', '-', '.').",
        }
        for line, text in cases.items():
            self.assertEqual(run(self.service, line), text + "\n\n", line)
        self.assertEqual(list(self.be.servers), ["web1", "web2"])
        self.assertEqual(list(self.service.pool.backends["static"].servers), ["s1"])

    def test_del_requires_maint(self) -> None:
        """A server not in maintenance cannot be deleted."""
        self.assertEqual(run(self.service, "del server web/web1"),
                         "Only servers in maintenance mode can be deleted.\n\n")
        self.assertIn("web1", self.be.servers)

    def test_del_requires_no_sessions(self) -> None:
        """A server with live connections cannot be deleted."""
        run(self.service, "disable server web/web1")
        self.be.servers["web1"].sessions.add(FakeSession())
        self.assertEqual(run(self.service, "del server web/web1"),
                         "Server still has connections attached to it, cannot remove it.\n\n")

    def test_del_server(self) -> None:
        """A server in maintenance without connections is deleted."""
        self.assertEqual(run(self.service, "disable server web/web1; del server web/web1"),
                         "\nServer deleted.\n\n")
        self.assertNotIn("web1", self.be.servers)
        self.assertEqual(run(self.service, "del server web/web1"), "No such server.\n\n")
        self.assertEqual(self.service.deleted_servers, {("web", "web1")})

    def test_del_added_server(self) -> None:
        """Deleting a server added at runtime leaves no trace."""
        run(self.service, "add server web/web3 10.0.0.3:81; del server web/web3")
        self.assertNotIn("web3", self.be.servers)
        self.assertEqual(self.service.deleted_servers, set())

    def test_re_add_deleted(self) -> None:
        """Adding a server under a deleted name forgets the deletion."""
        run(self.service, "disable server web/web1; del server web/web1; add server web/web1 10.0.0.7:80")
        self.assertEqual(self.service.deleted_servers, set())
        self.assertTrue(self.be.servers["web1"].added)


class MaxconnTests(SynchronousTestCase):
    def test_frontend(self) -> None:
        """set maxconn frontend changes that frontend's limit."""
        service = make_service()
        self.assertEqual(run(service, "set maxconn frontend www 50"), "\n")
        self.assertEqual(service.pool.frontends["www"].maxconn, 50)

    def test_frontend_zero_restores(self) -> None:
        """0 restores the configured frontend limit."""
        service = make_service()
        run(service, "set maxconn frontend www 50; set maxconn frontend www 0")
        self.assertEqual(service.pool.frontends["www"].maxconn, 2000)

    def test_global(self) -> None:
        """set maxconn global changes the process limit."""
        service = make_service()
        self.assertEqual(run(service, "set maxconn global 100"), "\n")
        self.assertEqual(service.pool.maxconn, 100)

    def test_errors(self) -> None:
        """Bad maxconn lines answer HAProxy's texts."""
        service = make_service()
        cases = {
            "set maxconn frontend": "A frontend name is expected.",
            "set maxconn frontend nope 5": "No such frontend.",
            "set maxconn frontend www": "Integer value expected.",
            "set maxconn frontend www abc": "Integer value expected.",
            "set maxconn frontend www -5": "Value out of range.",
            "set maxconn global": "Expects an integer value.",
            "set maxconn global 99999999": "Value out of range.",
        }
        for line, text in cases.items():
            self.assertEqual(run(service, line), text + "\n\n", line)
        self.assertEqual((service.pool.maxconn, service.pool.frontends["www"].maxconn), (4096, 2000))


class SessionCommandTests(SynchronousTestCase):
    def test_severity_number(self) -> None:
        """With severity-output number, messages carry '[N]: ' and dumps do not."""
        out = run(make_service(), "set severity-output number; disable server web/nope; show backend;"
                                  " add server web/web3 10.0.0.3:80")
        self.assertEqual(out, "\n[3]: No such server.\n\n# name\nweb\nstatic\n\n[6]: New server registered.\n\n")

    def test_severity_string(self) -> None:
        """With severity-output string, messages carry the syslog level name."""
        self.assertEqual(run(make_service(), "set severity-output string; enable server a/b"),
                         "\n[err]: No such backend.\n\n")

    def test_severity_bad(self) -> None:
        """An unknown severity-output mode answers HAProxy's text."""
        self.assertEqual(run(make_service(), "set severity-output loud"),
                         "one of 'none', 'number', 'string' is a required argument\n\n")

    def test_set_timeout(self) -> None:
        """set timeout cli changes the session's idle timeout, in seconds."""
        session = commands.Session()
        run(make_service(), "set timeout cli 120", session=session)
        self.assertEqual(session.timeout, 120.0)

    def test_set_timeout_bad(self) -> None:
        """set timeout without 'cli' or a delay answers why."""
        service = make_service()
        self.assertEqual(run(service, "set timeout client 5"), "'set timeout' only supports 'cli'.\n\n")
        self.assertEqual(run(service, "set timeout cli"), "Expects an integer value.\n\n")
        self.assertEqual(run(service, "set timeout cli soon"), "Invalid timeout value.\n\n")

    def test_prompt_toggles(self) -> None:
        """prompt switches interactive mode on, then off."""
        session = commands.Session()
        run(make_service(), "prompt", session=session)
        self.assertTrue(session.prompt)
        run(make_service(), "prompt", session=session)
        self.assertFalse(session.prompt)


class ReloadCommandTests(SynchronousTestCase):
    def test_reload_success(self) -> None:
        """reload answers Success=1 when the file is valid."""
        self.assertEqual(run(make_service(), "reload"), "Success=1\n\n")

    def test_reload_failure(self) -> None:
        """reload answers Success=0 and the errors when the file is invalid."""
        path = write_config(BASE)
        service = make_service(path=path)
        with open(path, "a") as f:
            f.write("[bogus]\n")
        out = run(service, "reload")
        self.assertEqual(out, "Success=0\n%s:21: bogus: unknown key (expected one of: admin, backends, defaults, "
                              "frontends, global, log, metrics)\n\n" % path)

    def test_reload_failure_is_an_error(self) -> None:
        """A failed reload is an error for severity-output."""
        path = write_config(BASE)
        service = make_service(path=path)
        with open(path, "w") as f:
            f.write("not toml [")
        self.assertTrue(commands.execute(service, "reload")[0].error)
