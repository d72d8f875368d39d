"""The service tree: it alone sees everything, so binding, grace and reload live here."""
from __future__ import annotations

from typing import Any, Callable

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import LoopingCall
from lbd.logsetup import Logger
from twisted.python.failure import Failure

from lbd import config as _config
from lbd.accesslog import AccessLog
from lbd.pool import Backend, Frontend, Pool, Server
from lbd.tcp import ProxyContext, TCPFrontendFactory


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


class StartupError(Exception):
    """lbd cannot start (a bind failed): the message says why."""


def frontend_factory(ctx: ProxyContext) -> Any:
    """The listening factory for a frontend's mode."""
    if ctx.frontend.cfg.mode == "http":
        from lbd.http.relay import HTTPFrontendFactory

        return HTTPFrontendFactory(ctx)
    return TCPFrontendFactory(ctx)


class LBService(MultiService):
    """Runs one configuration: frontends, backends, checks, admin, metrics."""

    log = Logger()

    def __init__(self, cfg: _config.Config, reactor: Any) -> None:
        super().__init__()
        self.reactor = reactor
        self.config = cfg
        self.pool = Pool(reactor, cfg.global_.maxconn)
        self.access = AccessLog(cfg.log)
        self.contexts: dict[str, ProxyContext] = {}
        self.ports: dict[str, list[Any]] = {}
        self.extra_ports: list[Any] = []
        self.stopping = False
        self._ticker = LoopingCall(self.pool.tick)
        self._ticker.clock = reactor
        self.on_stop: list[Callable[[], Any]] = []
        for bcfg in cfg.backends.values():
            self.pool.add_backend(bcfg)
        for fcfg in cfg.frontends.values():
            self._add_frontend(fcfg)

    # -- building -------------------------------------------------------

    def _add_frontend(self, fcfg: _config.FrontendConfig) -> ProxyContext:
        fe = self.pool.add_frontend(fcfg)
        ctx = ProxyContext(self.reactor, self.pool, fe, self.access)
        self.contexts[fcfg.name] = ctx
        return ctx

    def start_checker(self, srv: Server) -> None:
        """Start health checking ``srv`` if its backend has checks."""
        try:
            from lbd.health.checker import make_checker
        except ImportError:  # health checks land separately
            return
        checker = make_checker(self.reactor, srv)
        if checker is not None:
            srv.checker = checker
            checker.start()

    def stop_checker(self, srv: Server) -> None:
        if srv.checker is not None:
            srv.checker.stop()
            srv.checker = None

    # -- starting --------------------------------------------------------

    def privilegedStartService(self) -> None:
        """Bind everything before privileges drop; any failure aborts startup."""
        errors: list[str] = []
        for name, ctx in self.contexts.items():
            ports = []
            for bind in ctx.frontend.cfg.binds:
                port = self._listen(bind, frontend_factory(ctx), "frontends.%s.bind" % name, errors)
                if port is not None:
                    ports.append(port)
            self.ports[name] = ports
            ctx.frontend.listening = bool(ports)
        if self.config.metrics.bind is not None and not errors and _has("lbd.metrics"):
            from lbd.metrics import make_site

            port = self._listen(self.config.metrics.bind, make_site(self), "metrics.bind", errors)
            if port is not None:
                self.extra_ports.append(port)
        if self.config.admin.socket is not None and not errors and _has("lbd.admin.protocol"):
            from lbd.admin.protocol import listen_admin

            try:
                self.extra_ports.append(listen_admin(self))
            except StartupError as e:
                errors.append(str(e))
        if errors:
            self._unbind_all()
            for e in errors:
                self.log.critical("{error}", error=e)
            # SystemExit, not a traceback: the reason is already logged above.
            raise SystemExit("lbd: cannot start: " + "; ".join(errors))
        super().privilegedStartService()

    def _listen(self, bind: str, factory: Any, what: str, errors: list[str]) -> Any:
        try:
            endpoint = serverFromString(self.reactor, _config.bind_to_endpoint(bind))
        except Exception as e:
            errors.append("%s: cannot use %r: %s" % (what, bind, e))
            return None
        d = endpoint.listen(factory)
        result: list[Any] = []
        d.addBoth(result.append)
        if not result:
            # An endpoint that binds asynchronously: failures are logged when they come.
            d.addErrback(lambda f: self.log.failure("{what}: cannot listen on {bind}", f, what=what, bind=bind))
            return None
        outcome = result[0]
        if isinstance(outcome, Failure):
            errors.append("%s: cannot listen on %s: %s" % (what, bind, outcome.getErrorMessage()))
            return None
        return outcome

    def _unbind_all(self) -> None:
        for ports in self.ports.values():
            for p in ports:
                p.stopListening()
        for p in self.extra_ports:
            p.stopListening()
        self.ports = {}
        self.extra_ports = []

    def startService(self) -> None:
        super().startService()
        for srv in self.pool.all_servers():
            self.start_checker(srv)
        self._ticker.start(1.0, now=False)
        self.reactor.callWhenRunning(self._ready)

    def _ready(self) -> None:
        # Logged once the reactor runs, i.e. signal handlers are in place:
        # tests and scripts may wait for this line before sending SIGHUP/SIGTERM.
        self.log.info("lbd ready: {frontends} frontend(s), {backends} backend(s)",
                      frontends=len(self.pool.frontends), backends=len(self.pool.backends))

    # -- stopping --------------------------------------------------------

    def stopService(self) -> defer.Deferred[None]:
        """Close listeners at once, let connections finish for up to ``grace``."""
        self.stopping = True
        self.pool.stopping = True
        if self._ticker.running:
            self._ticker.stop()
        for srv in self.pool.all_servers():
            self.stop_checker(srv)
        waits = []
        for ports in self.ports.values():
            for p in ports:
                waits.append(defer.maybeDeferred(p.stopListening))
        self.ports = {}
        for hook in self.on_stop:
            hook()
        d = defer.DeferredList(waits)
        d.addCallback(lambda _: self._drain(self.config.global_.grace))
        d.addBoth(lambda _: self._close_extra())
        d.addBoth(lambda _: MultiService.stopService(self))
        d.addBoth(lambda _: self.access.close())
        return d

    def _close_extra(self) -> defer.Deferred[Any]:
        waits = [defer.maybeDeferred(p.stopListening) for p in self.extra_ports]
        self.extra_ports = []
        return defer.DeferredList(waits)

    def live_sessions(self) -> list[Any]:
        out: list[Any] = []
        for fe in self.pool.frontends.values():
            out.extend(fe.sessions)
        return out

    def _drain(self, grace: float) -> defer.Deferred[None]:
        sessions = self.live_sessions()
        if not sessions:
            return defer.succeed(None)
        self.log.info("stopping: waiting up to {grace}s for {n} connection(s)", grace=grace, n=len(sessions))
        for s in sessions:
            s.graceful_close()
        done: defer.Deferred[None] = defer.Deferred()
        deadline = self.reactor.seconds() + grace

        def poll() -> None:
            left = self.live_sessions()
            if not left:
                done.callback(None)
                return
            if self.reactor.seconds() >= deadline:
                self.log.warn("stopping: grace period over, closing {n} connection(s)", n=len(left))
                for s in left:
                    s.abort()
                done.callback(None)
                return
            self.reactor.callLater(min(0.05, max(deadline - self.reactor.seconds(), 0.0)), poll)

        poll()
        return done

    # -- runtime changes (admin socket, reload) --------------------------

    def backend(self, name: str) -> Backend | None:
        return self.pool.backends.get(name)

    def frontend(self, name: str) -> Frontend | None:
        return self.pool.frontends.get(name)
