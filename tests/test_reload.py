"""Reload: the new file is validated, then its difference applied in place, on a memory reactor."""
from __future__ import annotations

import os
import signal
from typing import Any

from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from lbd import state
from lbd.balance import LeastConn
from lbd.pool import MAINT, UP
from lbd.tcp import TCPFrontendFactory
from tests.admin.support import FakeSession, make_service, run, write_config

CONFIG = """\
[global]
maxconn = 1000
{global_extra}
[log]
access = "off"
[admin]
socket = "off"
[metrics]
bind = "off"
[defaults]
mode = "tcp"
[frontends.www]
bind = {www_bind}
default_backend = "{www_backend}"
{frontends}
[backends.web]
balance = "{balance}"
[backends.web.health]
type = "tcp"
rise = {rise}
[backends.web.servers]
{web_servers}
[backends.api.servers]
a1 = {{ address = "10.0.2.1:80" }}
{backends}
"""

WEB = 'web1 = { address = "10.0.0.1:80", weight = 2 }\nweb2 = { address = "10.0.0.2:80" }\n'
OLD_FRONTEND = '[frontends.old]\nbind = "127.0.0.1:18081"\ndefault_backend = "web"\n'


def conf(**kw: Any) -> str:
    values = {"global_extra": "", "www_bind": '"127.0.0.1:18080"', "www_backend": "web",
              "frontends": OLD_FRONTEND, "balance": "roundrobin", "rise": 2, "web_servers": WEB,
              "backends": ""}
    values.update(kw)
    return CONFIG.format(**values)


class Port:
    """A listening port as the memory reactor hands it out; records stopListening."""

    def __init__(self, port: int, factory: Any, interface: str) -> None:
        self.port = port
        self.factory = factory
        self.interface = interface
        self.listening = True

    def stopListening(self) -> None:
        self.listening = False

    def getHost(self) -> Any:
        return None


class ListenReactor(MemoryReactorClock):
    """A memory reactor whose listenTCP returns recording ports, and refuses ``busy`` ones."""

    def __init__(self) -> None:
        super().__init__()
        self.ports: list[Port] = []
        self.busy: set[int] = set()

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Port:  # type: ignore[override]
        if port in self.busy:
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))
        factory.doStart()
        p = Port(port, factory, interface)
        self.ports.append(p)
        return p

    def listening(self) -> dict[int, Port]:
        return {p.port: p for p in self.ports if p.listening}


class ReloadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = write_config(conf())
        self.reactor = ListenReactor()
        self.service = make_service(path=self.path, reactor=self.reactor)
        self.service.privilegedStartService()
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.web = self.service.pool.backends["web"]
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def rewrite(self, **kw: Any) -> list[str]:
        with open(self.path, "w") as f:
            f.write(conf(**kw))
        return self.service.reload()

    def logged(self, level: LogLevel) -> list[str]:
        return [formatEvent(e) for e in self.events if e.get("log_level") == level]

    # -- validation ------------------------------------------------------

    def test_invalid_changes_nothing(self) -> None:
        """An invalid file is reported, every error logged, and the running configuration kept."""
        before = self.service.config
        with open(self.path, "w") as f:
            f.write(conf(rise=0, www_backend="nope"))
        errors = self.service.reload()
        self.assertEqual(errors, [
            "%s:14: frontends.www.default_backend: no backend named 'nope'" % self.path,
            "%s:23: backends.web.health.rise: 0 is below 1" % self.path,
        ])
        self.assertIs(self.service.config, before)
        self.assertEqual(sorted(self.reactor.listening()), [18080, 18081])
        logged = self.logged(LogLevel.error)
        for e in errors:
            self.assertIn("reload: " + e, logged)
        self.assertIn("reload failed (2 error(s)): still running the previous configuration", logged)

    def test_bind_failure_changes_nothing(self) -> None:
        """A new address that cannot be bound fails the reload and closes what it opened."""
        self.reactor.busy.add(18083)
        errors = self.rewrite(frontends=OLD_FRONTEND + '[frontends.a]\nbind = "127.0.0.1:18082"\n'
                                                       'default_backend = "web"\n[frontends.b]\n'
                                                       'bind = "127.0.0.1:18083"\ndefault_backend = "web"\n')
        self.assertEqual(errors, ["frontends.b.bind: cannot listen on 127.0.0.1:18083: Couldn't listen on "
                                  "127.0.0.1:18083: [Errno 98] Address already in use."])
        self.assertEqual(sorted(self.reactor.listening()), [18080, 18081])
        self.assertEqual(list(self.service.pool.frontends), ["www", "old"])

    def test_stopping_refuses(self) -> None:
        """A reload while stopping is refused."""
        self.service.stopping = True
        self.assertEqual(self.service.reload(), ["lbd is stopping: reload refused"])

    # -- servers ---------------------------------------------------------

    def test_add_server_keeps_others(self) -> None:
        """A server added to the file appears; the others are the same objects with their counters."""
        web1 = self.web.servers["web1"]
        web1.tot_sess = 5
        self.assertEqual(self.rewrite(web_servers=WEB + 'web3 = { address = "10.0.0.3:80" }\n'), [])
        self.assertIs(self.web.servers["web1"], web1)
        self.assertEqual(web1.tot_sess, 5)
        self.assertEqual(list(self.web.servers), ["web1", "web2", "web3"])
        self.assertIn(self.web.servers["web3"], self.web.active)
        self.assertIn(("start", "web/web3"), self.service.checks)

    def test_weight_change(self) -> None:
        """A weight changed in the file becomes the configured, operator and effective weight."""
        web1 = self.web.servers["web1"]
        self.rewrite(web_servers=WEB.replace("weight = 2", "weight = 5"))
        self.assertIs(self.web.servers["web1"], web1)
        self.assertEqual((web1.iweight, web1.uweight, web1.eweight), (5, 5, 5))

    def test_operator_weight_kept(self) -> None:
        """An operator's weight survives a reload that leaves the configured weight alone."""
        run(self.service, "set weight web/web2 7")
        self.rewrite(web_servers=WEB + 'web3 = { address = "10.0.0.3:80" }\n')
        self.assertEqual(self.web.servers["web2"].uweight, 7)

    def test_admin_state_kept(self) -> None:
        """Maintenance, drain and disabled health survive a reload."""
        run(self.service, "disable server web/web1; set server web/web2 state drain; disable health web/web2")
        self.rewrite(balance="leastconn")
        self.assertEqual(self.web.servers["web1"].state, MAINT)
        self.assertTrue(self.web.servers["web2"].drain)
        self.assertTrue(self.web.servers["web2"].health_disabled)

    def test_health_kept(self) -> None:
        """A server that checks found DOWN stays DOWN across an unrelated reload."""
        self.web.set_operational(self.web.servers["web2"], False)
        checks_before = list(self.service.checks)
        self.rewrite(frontends="")
        self.assertFalse(self.web.servers["web2"].up)
        self.assertEqual(self.service.checks, checks_before)

    def test_remove_server_lets_connections_finish(self) -> None:
        """A server dropped from the file takes no new traffic; its connections are not cut."""
        web2 = self.web.servers["web2"]
        session = FakeSession()
        web2.sessions.add(session)
        self.rewrite(web_servers='web1 = { address = "10.0.0.1:80", weight = 2 }\n')
        self.assertEqual(list(self.web.servers), ["web1"])
        self.assertNotIn(web2, self.web.active)
        self.assertFalse(session.aborted)
        self.assertIn(("stop", "web/web2"), self.service.checks)

    def test_address_change(self) -> None:
        """A new address applies in place and restarts that server's check only."""
        web2 = self.web.servers["web2"]
        self.rewrite(web_servers=WEB.replace("10.0.0.2:80", "10.0.0.20:8080"))
        self.assertIs(self.web.servers["web2"], web2)
        self.assertEqual((web2.host, web2.port), ("10.0.0.20", 8080))
        self.assertEqual(self.service.checks[-2:], [("stop", "web/web2"), ("start", "web/web2")])
        self.assertEqual(self.service.checks.count(("stop", "web/web1")), 0)

    def test_health_change_restarts_checks(self) -> None:
        """A changed [health] restarts the checks of that backend."""
        self.rewrite(rise=5)
        self.assertEqual(self.service.checks[-4:], [("stop", "web/web1"), ("start", "web/web1"),
                                                   ("stop", "web/web2"), ("start", "web/web2")])

    def test_check_removed_brings_server_up(self) -> None:
        """A DOWN server whose check is removed counts as UP again."""
        web2 = self.web.servers["web2"]
        self.web.set_operational(web2, False)
        self.rewrite(web_servers=WEB.replace('"10.0.0.2:80" }', '"10.0.0.2:80", check = false }'))
        self.assertEqual(web2.state, UP)
        self.assertFalse(web2.checked)

    def test_disabled_in_file(self) -> None:
        """disabled = true in the file puts the server in maintenance."""
        self.rewrite(web_servers=WEB.replace('"10.0.0.2:80" }', '"10.0.0.2:80", disabled = true }'))
        self.assertEqual(self.web.servers["web2"].state, MAINT)

    def test_balance_change(self) -> None:
        """A new balance algorithm takes over at once."""
        self.rewrite(balance="leastconn")
        self.assertIsInstance(self.web.balancer, LeastConn)
        self.assertIs(self.web.pick(b"x").backend, self.web)

    def test_runtime_added_server_kept(self) -> None:
        """A server added at runtime survives a reload."""
        run(self.service, "add server web/extra 10.0.0.9:80; enable server web/extra")
        self.rewrite(web_servers=WEB + 'web3 = { address = "10.0.0.3:80" }\n')
        self.assertEqual(list(self.web.servers), ["web1", "web2", "web3", "extra"])
        self.assertEqual(self.web.servers["extra"].state, UP)

    def test_runtime_added_server_adopted(self) -> None:
        """When the file names a server added at runtime, the file owns it; its maintenance stays."""
        run(self.service, "add server web/web3 10.0.0.3:80")
        added = self.web.servers["web3"]
        self.rewrite(web_servers=WEB + 'web3 = { address = "10.0.0.3:80" }\n')
        self.assertIs(self.web.servers["web3"], added)
        self.assertFalse(added.added)
        self.assertEqual(added.state, MAINT)

    def test_deleted_server_stays_deleted(self) -> None:
        """A configured server deleted at runtime does not come back on reload."""
        run(self.service, "disable server web/web2; del server web/web2")
        self.rewrite(balance="leastconn")
        self.assertEqual(list(self.web.servers), ["web1"])

    def test_deletion_forgotten_when_file_drops_it(self) -> None:
        """Once the file no longer lists a deleted server, listing it again brings it back."""
        run(self.service, "disable server web/web2; del server web/web2")
        self.rewrite(web_servers='web1 = { address = "10.0.0.1:80", weight = 2 }\n')
        self.assertEqual(self.service.deleted_servers, set())
        self.rewrite()
        self.assertEqual(list(self.web.servers), ["web1", "web2"])

    # -- backends --------------------------------------------------------

    def test_backend_added_and_removed(self) -> None:
        """Backends added to the file appear with checks; removed ones go, their checks stopped."""
        self.rewrite(frontends="", www_backend="web",
                     backends='[backends.new.servers]\nn1 = { address = "10.0.3.1:80" }\n')
        self.assertEqual(list(self.service.pool.backends), ["web", "api", "new"])
        api = self.service.pool.backends["api"]
        self.rewrite(frontends="")
        self.assertEqual(list(self.service.pool.backends), ["web", "api"])
        self.assertIsNot(self.service.pool.backends["api"], None)
        self.assertIs(self.service.pool.backends["api"], api)

    def test_backend_removed_marked(self) -> None:
        """A removed backend is marked removed so late users can tell."""
        self.rewrite(backends='[backends.gone.servers]\ng1 = { address = "10.0.4.1:80" }\n')
        gone = self.service.pool.backends["gone"]
        self.rewrite()
        self.assertTrue(gone.removed)
        self.assertNotIn("gone", self.service.pool.backends)

    # -- frontends -------------------------------------------------------

    def test_remove_frontend(self) -> None:
        """A frontend dropped from the file stops listening; its connections finish."""
        old = self.service.pool.frontends["old"]
        session = FakeSession()
        old.sessions.add(session)
        port = self.reactor.listening()[18081]
        self.rewrite(frontends="")
        self.assertFalse(port.listening)
        self.assertNotIn("old", self.service.pool.frontends)
        self.assertTrue(old.removed)
        self.assertFalse(session.aborted)
        self.assertTrue(session.graceful)
        self.assertIn(session, self.service.live_sessions())

    def test_retired_frontend_forgotten_when_idle(self) -> None:
        """A removed frontend is no longer tracked once its connections are gone."""
        old = self.service.pool.frontends["old"]
        session = FakeSession()
        old.sessions.add(session)
        self.rewrite(frontends="")
        old.sessions.discard(session)
        self.rewrite(frontends="", balance="leastconn")
        self.assertEqual(self.service.retired_frontends, [])

    def test_add_frontend(self) -> None:
        """A frontend added to the file listens with its own context."""
        self.rewrite(frontends=OLD_FRONTEND + '[frontends.extra]\nbind = "127.0.0.1:18082"\n'
                                              'default_backend = "api"\n')
        port = self.reactor.listening()[18082]
        self.assertIsInstance(port.factory, TCPFrontendFactory)
        ctx = port.factory.ctx
        self.assertIs(ctx.frontend, self.service.pool.frontends["extra"])
        self.assertIs(ctx.backend, self.service.pool.backends["api"])
        self.assertIs(self.service.contexts["extra"], ctx)
        self.assertEqual(self.service.ports["extra"], [port])

    def test_frontend_bind_changed(self) -> None:
        """A frontend moved to a new address listens there and stops on the old one."""
        old_port = self.reactor.listening()[18080]
        self.rewrite(www_bind='"127.0.0.1:18090"')
        self.assertFalse(old_port.listening)
        new_port = self.reactor.listening()[18090]
        self.assertIs(new_port.factory.ctx.frontend, self.service.pool.frontends["www"])
        self.assertEqual(self.service.ports["www"], [new_port])

    def test_bind_kept(self) -> None:
        """An unchanged address keeps its listening socket: no connection is refused meanwhile."""
        port = self.reactor.listening()[18080]
        self.rewrite(www_bind='["127.0.0.1:18080", "127.0.0.1:18091"]')
        self.assertTrue(port.listening)
        self.assertEqual(self.service.ports["www"], [port, self.reactor.listening()[18091]])

    def test_bind_moves_between_frontends(self) -> None:
        """An address handed from one frontend to another keeps its socket and serves the new one."""
        port = self.reactor.listening()[18081]
        count = len(self.reactor.ports)
        self.rewrite(www_bind='["127.0.0.1:18080", "127.0.0.1:18081"]', frontends="")
        self.assertTrue(port.listening)
        self.assertEqual(len(self.reactor.ports), count)
        self.assertIs(port.factory.ctx.frontend, self.service.pool.frontends["www"])

    def test_default_backend_changed(self) -> None:
        """New connections go to the new default backend; established ones keep their context."""
        port = self.reactor.listening()[18080]
        old_ctx = port.factory.ctx
        self.rewrite(www_backend="api")
        self.assertIs(old_ctx.backend, self.web)
        self.assertIs(port.factory.ctx.backend, self.service.pool.backends["api"])
        self.assertIs(port.factory.ctx.frontend, old_ctx.frontend)

    def test_frontend_counters_kept(self) -> None:
        """A changed frontend keeps its counters."""
        fe = self.service.pool.frontends["www"]
        fe.tot_sess = 12
        self.rewrite(www_backend="api")
        self.assertIs(self.service.pool.frontends["www"], fe)
        self.assertEqual(fe.tot_sess, 12)

    def test_global_maxconn(self) -> None:
        """A new global.maxconn applies at once."""
        self.assertEqual(self.service.pool.maxconn, 1000)
        with open(self.path, "w") as f:
            f.write(conf().replace("maxconn = 1000", "maxconn = 300"))
        self.service.reload()
        self.assertEqual(self.service.pool.maxconn, 300)

    def test_runtime_frontend_maxconn_kept(self) -> None:
        """A frontend limit set at runtime stays while the file leaves that limit alone."""
        run(self.service, "set maxconn frontend www 25")
        self.rewrite(www_backend="api")
        self.assertEqual(self.service.pool.frontends["www"].maxconn, 25)

    def test_backend_timeouts(self) -> None:
        """New backend timeouts replace the old ones on the same backend object."""
        with open(self.path, "w") as f:
            f.write(conf().replace('[backends.web]\n', '[backends.web]\ntimeout = { server = "7s" }\n'))
        self.assertEqual(self.service.reload(), [])
        self.assertIs(self.service.pool.backends["web"], self.web)
        self.assertEqual(self.web.cfg.timeouts.server, 7.0)

    def test_summary_logged(self) -> None:
        """Each change is logged, then the count."""
        self.rewrite(frontends="")
        infos = self.logged(LogLevel.info)
        self.assertIn("reload: frontend old removed (no longer listening; its connections finish)", infos)
        self.assertIn("reload done: 1 change(s)", infos)

    def test_state_saved(self) -> None:
        """A reload writes the state file (servers it added or removed included)."""
        state_path = os.path.join(os.path.dirname(self.path), "state.json")
        self.rewrite(global_extra='state_file = "%s"' % state_path,
                     web_servers=WEB + 'web3 = { address = "10.0.0.3:80" }\n')
        saved = state.load(state_path)
        assert saved is not None
        self.assertEqual([s["server"] for s in saved["servers"]], ["web1", "web2", "web3", "a1"])


class SighupTests(SynchronousTestCase):
    def test_sighup_reloads(self) -> None:
        """SIGHUP makes the running service re-read its file, on the reactor's turn."""
        path = write_config(conf())
        reactor = ListenReactor()
        service = make_service(path=path, reactor=reactor)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        with open(path, "w") as f:
            f.write(conf(frontends=""))
        os.kill(os.getpid(), signal.SIGHUP)
        self.assertIn("old", service.pool.frontends)     # not inside the signal handler
        reactor.advance(0)
        self.assertNotIn("old", service.pool.frontends)

    def test_handler_removed_on_stop(self) -> None:
        """Stopping the service puts the previous SIGHUP handler back."""
        before = signal.getsignal(signal.SIGHUP)
        service = make_service(conf(), reactor=ListenReactor())
        service.startService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), service._on_sighup)
        service.stopService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), before)
