"""ServerChecker over a real pool.Backend on a task.Clock: log lines, check fields, maintenance, slowstart, backups."""
from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any

from twisted.internet import defer, reactor as _reactor, task
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import PrivateCertificate
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from lbd import config, stats
from lbd.health.checker import ServerChecker, make_checker
from lbd.health.probes import CheckResult, Target
from lbd.pool import Backend

reactor: Any = _reactor

CONFIG = """\
[defaults]
mode = "tcp"
[defaults.timeout]
check = "1500ms"
[backends.web.health]
type = "{kind}"
interval = "2s"
fastinter = "1s"
downinter = "5s"
rise = 2
fall = 3
{health_extra}
[backends.web.servers]
web1 = {{ address = "127.0.0.1:9001"{web1} }}
web2 = {{ address = "127.0.0.1:9002"{web2} }}
{more}
"""

REFUSED = CheckResult("L4CON", None, "Connection refused", 0.0012)
PASSED = CheckResult("L7OK", 200, "OK", 0.0025)


def backend(kind: str = "tcp", web1: str = "", web2: str = "", more: str = "", health_extra: str = "",
            clock: task.Clock | None = None) -> Backend:
    cfg = config.loads(CONFIG.format(kind=kind, web1=web1, web2=web2, more=more, health_extra=health_extra))
    return Backend(cfg.backends["web"], clock or task.Clock())


class Scripted:
    """A probe answering from a per-server flag, at once; records targets and times."""

    def __init__(self, clock: task.Clock) -> None:
        self.clock = clock
        self.alive = True
        self.ok = PASSED
        self.bad = REFUSED
        self.calls: list[tuple[float, Target]] = []

    def __call__(self, reactor: Any, target: Target) -> defer.Deferred[CheckResult]:
        self.calls.append((self.clock.seconds(), target))
        return defer.succeed(self.ok if self.alive else self.bad)


def checked(be: Backend, name: str, spread: float = 0.5) -> tuple[ServerChecker, Scripted]:
    srv = be.servers[name]
    checker = make_checker(be.clock, srv, rng=lambda: spread)
    assert checker is not None
    probe = Scripted(be.clock)  # type: ignore[arg-type]
    checker.probe = probe
    srv.checker = checker
    return checker, probe


def run_until(clock: Any, end: float, step: float = 0.25) -> None:
    while clock.seconds() < end:
        clock.advance(step)


def lines(events: list[Any]) -> list[str]:
    return [formatEvent(e) for e in events if e.get("log_namespace", "").startswith("lbd.pool")]


class CheckerTests(SynchronousTestCase):
    """What a checker does to its server and backend."""

    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def test_make_checker_only_for_checked_servers(self) -> None:
        """No checker for ``check = false`` or a backend without [health]."""
        be = backend(web2=", check = false")
        self.assertIsInstance(make_checker(be.clock, be.servers["web1"]), ServerChecker)
        self.assertIsNone(make_checker(be.clock, be.servers["web2"]))
        plain = Backend(config.loads('[backends.web.servers]\nweb1 = { address = "127.0.0.1:1" }\n').backends["web"],
                        task.Clock())
        self.assertIsNone(make_checker(plain.clock, plain.servers["web1"]))

    def test_down_log_line(self) -> None:
        """Going DOWN logs HAProxy's line with the check's reason, info and duration."""
        be = backend()
        checker, probe = checked(be, "web1")
        probe.alive = False
        checker.start()
        run_until(be.clock, 1.0)
        self.assertEqual(lines(self.events), [
            'Server web/web1 is DOWN, reason: Layer4 connection problem, info: "Connection refused", '
            "check duration: 1ms. 1 active and 0 backup servers left."])
        self.assertEqual(be.servers["web1"].state, "DOWN")
        self.assertEqual(be.active, [be.servers["web2"]])

    def test_no_server_available(self) -> None:
        """When the last server goes DOWN, the backend says it has no server available."""
        be = backend()
        c1, p1 = checked(be, "web1")
        c2, p2 = checked(be, "web2", spread=0.75)
        p1.alive = p2.alive = False
        c1.start()
        c2.start()
        run_until(be.clock, 1.0)
        self.assertEqual(lines(self.events)[1:], [
            'Server web/web2 is DOWN, reason: Layer4 connection problem, info: "Connection refused", '
            "check duration: 1ms. 0 active and 0 backup servers left.",
            "backend web has no server available!"])

    def test_up_log_line(self) -> None:
        """Coming back UP logs HAProxy's line with the code and 'servers online'."""
        be = backend()
        checker, probe = checked(be, "web1")
        probe.alive = False
        checker.start()
        run_until(be.clock, 1.0)
        probe.alive = True
        run_until(be.clock, 12.0)
        self.assertEqual(lines(self.events)[-1],
                         'Server web/web1 is UP, reason: Layer7 check passed, code: 200, info: "OK", '
                         "check duration: 2ms. 2 active and 0 backup servers online.")

    def test_exact_times_through_the_pool(self) -> None:
        """Dead at 5 s: out of the balancer at 8.5 s; back at 14 s: in again at 19.5 s."""
        be = backend()
        checker, probe = checked(be, "web1")
        web1 = be.servers["web1"]
        checker.start()
        seen: list[tuple[float, str]] = []
        be.listeners.append(lambda srv: seen.append((be.clock.seconds(), srv.state)))
        run_until(be.clock, 5.0)
        probe.alive = False
        run_until(be.clock, 14.0)
        probe.alive = True
        run_until(be.clock, 25.0)
        self.assertEqual(seen, [(8.5, "DOWN"), (19.5, "UP")])
        self.assertIn(web1, be.active)
        self.assertEqual((web1.chkdown, web1.chkfail), (1, 3))
        self.assertEqual(web1.total_downtime(25.0), 11.0)

    def test_check_fields(self) -> None:
        """Each result lands in check_status/code/duration/desc; failures count in chkfail while health > 0."""
        be = backend()
        checker, probe = checked(be, "web1")
        web1 = be.servers["web1"]
        checker.start()
        run_until(be.clock, 1.0)
        got = [(web1.check_status, web1.check_code, web1.check_duration, web1.check_desc, checker.health)]
        probe.alive = False
        run_until(be.clock, 3.0)
        got.append((web1.check_status, web1.check_code, web1.check_duration, web1.check_desc, checker.health))
        self.assertEqual(got, [("L7OK", 200, 0.0025, "OK", 4), ("L4CON", None, 0.0012, "Connection refused", 3)])
        self.assertEqual(web1.chkfail, 1)

    def test_stats_status_while_changing(self) -> None:
        """show stat reads the counter: 'UP 2/3' going down, 'DOWN 1/2' going up."""
        be = backend()
        checker, probe = checked(be, "web1")
        web1 = be.servers["web1"]
        checker.start()
        run_until(be.clock, 1.0)
        statuses = [stats.server_status(web1)]
        probe.alive = False
        run_until(be.clock, 3.0)
        statuses.append(stats.server_status(web1))
        run_until(be.clock, 5.0)
        statuses.append(stats.server_status(web1))
        probe.alive = True
        run_until(be.clock, 10.0)
        statuses.append(stats.server_status(web1))
        self.assertEqual(statuses, ["UP", "UP 2/3", "DOWN", "DOWN 1/2"])

    def test_maintenance_pauses_checks(self) -> None:
        """In maintenance nothing is probed; leaving it, the server is UP at once and checked at once."""
        be = backend()
        checker, probe = checked(be, "web1")
        web1 = be.servers["web1"]
        checker.start()
        run_until(be.clock, 1.0)
        be.set_maint(web1, True)
        n = len(probe.calls)
        run_until(be.clock, 20.0)
        self.assertEqual(len(probe.calls), n)
        probe.alive = False
        be.set_maint(web1, False)
        self.assertEqual(web1.state, "UP")
        be.clock.advance(0)
        self.assertEqual((probe.calls[-1][0], web1.state), (20.0, "DOWN"))

    def test_leaving_maintenance_down_server(self) -> None:
        """A server DOWN when put in maintenance comes out UP (HAProxy), and stays UP if it passes."""
        be = backend()
        checker, probe = checked(be, "web1")
        web1 = be.servers["web1"]
        probe.alive = False
        checker.start()
        run_until(be.clock, 1.0)
        be.set_maint(web1, True)
        probe.alive = True
        be.set_maint(web1, False)
        be.clock.advance(0)
        run_until(be.clock, 10.0)
        self.assertEqual((web1.state, checker.health), ("UP", 4))
        self.assertEqual(lines(self.events)[-1], "Server web/web1 is UP (by operator).")

    def test_disabled_health_not_probed(self) -> None:
        """With the health check disabled, nothing is probed."""
        be = backend()
        checker, probe = checked(be, "web1")
        be.servers["web1"].health_disabled = True
        checker.start()
        run_until(be.clock, 20.0)
        self.assertEqual(probe.calls, [])

    def test_follows_forced_state(self) -> None:
        """A server forced UP from outside (disable health, reload) is judged from ``rise`` again."""
        be = backend()
        checker, probe = checked(be, "web1")
        web1 = be.servers["web1"]
        probe.alive = False
        checker.start()
        run_until(be.clock, 1.0)
        be.set_operational(web1, True, "forced")
        run_until(be.clock, 6.0)
        self.assertEqual(web1.state, "DOWN")
        self.assertEqual(web1.chkdown, 2)

    def test_targets(self) -> None:
        """Checks go to check_address/check_port, else health.port, else the traffic address."""
        be = backend(health_extra="port = 9200", web2=', check_address = "10.0.0.9", check_port = 3307',
                     more='web3 = { address = "10.0.0.3:80", check_port = 81 }')
        targets = []
        for name in ("web1", "web2", "web3"):
            checker = make_checker(be.clock, be.servers[name])
            assert checker is not None
            t = checker.target()
            targets.append((t.host, t.port, t.timeout, t.tls))
        self.assertEqual(targets, [("127.0.0.1", 9200, 1.5, None), ("10.0.0.9", 3307, 1.5, None),
                                   ("10.0.0.3", 81, 1.5, None)])

    def test_timeout_read_per_check(self) -> None:
        """A new timeout.check (reload) applies from the next check."""
        be = backend()
        checker, probe = checked(be, "web1", spread=0.0)
        checker.start()
        be.clock.advance(0)
        be.cfg = dataclasses.replace(be.cfg, timeouts=dataclasses.replace(be.cfg.timeouts, check=0.25))
        run_until(be.clock, 3.0)
        self.assertEqual([t.timeout for _, t in probe.calls], [1.5, 0.25])

    def test_slowstart_weights(self) -> None:
        """After coming back UP, a slowstart server's weight ramps up second by second to its weight."""
        be = backend(web1=", weight = 10, slowstart = \"10s\"")
        checker, probe = checked(be, "web1")
        web1 = be.servers["web1"]
        probe.alive = False
        checker.start()
        run_until(be.clock, 1.0)
        probe.alive = True
        run_until(be.clock, 7.0)          # UP at 6.5 (DOWN at 0.5, checks at 5.5 and 6.5)
        weights = []
        for _ in range(12):
            weights.append(web1.eweight)
            be.clock.advance(1.0)
        self.assertEqual(weights, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 10, 10])

    def test_backup_takes_over(self) -> None:
        """With both actives DOWN, the backup serves, and the log says so."""
        be = backend(more='spare = { address = "127.0.0.1:9003", backup = true }')
        for name, spread in (("web1", 0.25), ("web2", 0.5)):
            checker, probe = checked(be, name, spread)
            probe.alive = False
            checker.start()
        run_until(be.clock, 1.0)
        self.assertEqual(be.pick(b""), be.servers["spare"])
        self.assertTrue(lines(self.events)[-1].endswith("0 active and 1 backup servers left."))

    def test_replaced_checker_keeps_full_health(self) -> None:
        """A checker replacing one whose checks passed (reload) starts fully UP: one failure is not DOWN."""
        be = backend()
        checker, probe = checked(be, "web1")
        checker.start()
        run_until(be.clock, 1.0)
        checker.stop()
        fresh, probe2 = checked(be, "web1")
        self.assertEqual(fresh.health, 4)

    def test_stop_is_final(self) -> None:
        """After stop(), no timer is left and nothing is probed."""
        be = backend()
        checker, probe = checked(be, "web1")
        checker.start()
        run_until(be.clock, 1.0)
        checker.stop()
        checker.stop()
        n = len(probe.calls)
        run_until(be.clock, 30.0)
        self.assertEqual(len(probe.calls), n)
        self.assertFalse(checker.running)


class TLSCheckTests(TestCase):
    """A ``tls`` server is checked over TLS (L6OK), with certificate verification (L6RSP)."""

    timeout = 20

    def setUp(self) -> None:
        from tests.http.test_tls import make_ca, make_leaf
        from cryptography.hazmat.primitives import serialization

        ca_key, ca_cert = make_ca("lbd test CA")
        key_pem, cert_pem = make_leaf(ca_key, ca_cert, "localhost")
        self.dir = tempfile.mkdtemp(prefix="lbd-health-tls-")
        self.ca_path = os.path.join(self.dir, "ca.pem")
        with open(self.ca_path, "wb") as f:
            f.write(ca_cert.public_bytes(serialization.Encoding.PEM))
        other_key, other = make_ca("someone else")
        self.other_ca = os.path.join(self.dir, "other.pem")
        with open(self.other_ca, "wb") as f:
            f.write(other.public_bytes(serialization.Encoding.PEM))
        cert = PrivateCertificate.loadPEM(key_pem + cert_pem)
        factory = Factory.forProtocol(Protocol)
        factory.noisy = False
        self.port = reactor.listenSSL(0, factory, cert.options(), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.addCleanup(self._only_known_warnings)

    def _only_known_warnings(self) -> None:
        """The newest pyOpenSSL deprecates the pyOpenSSL objects Twisted's own TLS options pass it
        (as in tests/http/test_tls.py); any other warning fails the test."""
        for w in self.flushWarnings():
            if not (w["category"] is DeprecationWarning and w["message"].startswith("Passing pyOpenSSL ")):
                self.fail("unexpected warning: %s: %s" % (w["category"].__name__, w["message"]))

    @defer.inlineCallbacks
    def check_with(self, ca: str) -> Any:
        port = self.port.getHost().port
        cfg = config.loads(CONFIG.format(kind="tcp", health_extra="", more="",
                                         web1=', tls = true, tls_sni = "localhost", tls_ca = "%s"' % ca,
                                         web2="").replace("9001", str(port)))
        be = Backend(cfg.backends["web"], reactor)
        checker = make_checker(reactor, be.servers["web1"])
        assert checker is not None
        target = checker.target()
        self.assertIsNotNone(target.tls)
        result = yield checker.probe(reactor, target)
        yield task.deferLater(reactor, 0.05, lambda: None)
        return result

    @defer.inlineCallbacks
    def test_tls_handshake_passes(self) -> Any:
        """A completed, verified handshake is L6OK."""
        r = yield self.check_with(self.ca_path)
        self.assertEqual(r.status, "L6OK")

    @defer.inlineCallbacks
    def test_tls_verification_fails(self) -> Any:
        """A certificate the configured CA did not sign is L6RSP."""
        r = yield self.check_with(self.other_ca)
        self.assertEqual(r.status, "L6RSP")
        self.assertTrue(r.desc)
