"""The service tree: it alone sees everything, so binding, grace and reload live here."""
from __future__ import annotations

from typing import Any, Callable

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from lbd.logsetup import Logger
from twisted.python.failure import Failure

from lbd import config as _config
from lbd.accesslog import AccessLog
from lbd.pool import Backend, Frontend, Pool, Server
from lbd.tcp import ProxyContext, TCPFrontendFactory


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
        self.deleted_servers: set[tuple[str, str]] = set()   # "del server" of configured servers
        self.retired_frontends: list[Frontend] = []           # removed by reload, connections finishing
        self._old_sighup: tuple[Any] | None = None
        self._bind_ports: dict[str, dict[str, Any]] = {}      # frontend -> endpoint string -> port (reload)
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
        if srv.health_disabled:
            return
        from lbd.health.checker import make_checker

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
        if self.config.metrics.bind is not None and not errors:
            from lbd.metrics import make_site

            port = self._listen(self.config.metrics.bind, make_site(self), "metrics.bind", errors)
            if port is not None:
                self.extra_ports.append(port)
        if self.config.admin.socket is not None and not errors:
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
        self.restore_state()
        for srv in self.pool.all_servers():
            self.start_checker(srv)
        self._install_sighup()
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
        self._restore_sighup()
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
        for fe in self.retired_frontends:
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

    # -- admin state file ------------------------------------------------

    def save_state(self) -> None:
        """Persist the admin state when ``global.state_file`` is set; a failure is logged, not raised."""
        path = self.config.global_.state_file
        if not path:
            return
        from lbd import state as _state

        try:
            _state.save(path, _state.snapshot(self.pool, self.deleted_servers))
        except OSError as e:
            self.log.error("cannot write the state file {path}: {error}", path=path, error=e.strerror or str(e))

    def restore_state(self) -> None:
        """Apply the saved admin state, before checks start; an unusable file is reported and ignored."""
        path = self.config.global_.state_file
        if not path:
            return
        from lbd import state as _state

        try:
            data = _state.load(path)
        except _state.StateError as e:
            self.log.error("state file {path} ignored: {error}", path=path, error=str(e))
            return
        if data is None:
            return
        result = _state.restore(self.pool, data)
        self.deleted_servers = result.deleted
        for message in result.messages:
            self.log.warn("state file {path}: {message}", path=path, message=message)
        self.log.info("admin state restored from {path}: {servers} server(s), {added} added, {deleted} deleted",
                      path=path, servers=result.applied, added=len(result.added), deleted=len(result.deleted))

    # -- SIGHUP ----------------------------------------------------------

    def _install_sighup(self) -> None:
        """SIGHUP reloads. twistd leaves SIGHUP alone, and its default action would kill lbd."""
        import signal
        import threading

        if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
            return
        try:
            self._old_sighup = (signal.signal(signal.SIGHUP, self._on_sighup),)
        except (ValueError, OSError):  # pragma: no cover - not the main interpreter
            self._old_sighup = None

    def _restore_sighup(self) -> None:
        import signal

        if self._old_sighup is None:
            return
        try:
            signal.signal(signal.SIGHUP, self._old_sighup[0])
        except (ValueError, OSError, TypeError):  # pragma: no cover
            pass
        self._old_sighup = None

    def _on_sighup(self, signum: int, frame: Any) -> None:
        # A signal handler runs between any two bytecodes: hand the work to the reactor loop.
        call = getattr(self.reactor, "callFromThread", None)
        if call is not None:
            call(self._sighup_reload)
        else:
            self.reactor.callLater(0, self._sighup_reload)

    def _sighup_reload(self) -> None:
        self.log.info("SIGHUP received")
        self.reload()

    # -- reload ------------------------------------------------------------

    def reload(self) -> list[str]:
        """Re-read the configuration file and apply the difference in place.

        Returns the errors; when there are any, nothing changed. Unchanged
        servers keep their counters, health and admin state; removed
        frontends, backends and servers stop taking new connections and
        their established ones finish on their own.
        """
        if self.stopping:
            return ["lbd is stopping: reload refused"]
        path = self.config.path
        self.log.info("reloading the configuration from {path}", path=path)
        try:
            new = _config.load(path)
        except _config.ConfigError as e:
            for error in e.errors:
                self.log.error("reload: {error}", error=error)
            self.log.error("reload failed ({n} error(s)): still running the previous configuration", n=len(e.errors))
            return list(e.errors)
        errors: list[str] = []
        opened = self._reload_bind(new, errors)
        if errors:
            for ports in opened.values():
                for port in ports.values():
                    port.stopListening()
            for error in errors:
                self.log.error("reload: {error}", error=error)
            self.log.error("reload failed ({n} error(s)): still running the previous configuration", n=len(errors))
            return errors
        changes = self._reload_apply(new, opened)
        self.save_state()
        for change in changes:
            self.log.info("reload: {change}", change=change)
        self.log.info("reload done: {n} change(s)", n=len(changes))
        return []

    def _bind_map(self, name: str) -> dict[str, Any]:
        """Endpoint string -> listening port of a running frontend."""
        bmap = self._bind_ports.get(name)
        if bmap is None:
            binds = self.contexts[name].frontend.cfg.binds
            bmap = {_config.bind_to_endpoint(b): p for b, p in zip(binds, self.ports.get(name, []))}
            self._bind_ports[name] = bmap
        return bmap

    def _reload_bind(self, new: _config.Config, errors: list[str]) -> dict[str, dict[str, Any]]:
        """Listen on every address the new configuration adds; nothing else changes yet.

        The new ports get a factory that accepts nothing; ``_reload_apply``
        gives them the real one before the reactor runs again.
        """
        bound: set[str] = set()
        for name in self.contexts:
            bound.update(self._bind_map(name))
        opened: dict[str, dict[str, Any]] = {}
        for name, fcfg in new.frontends.items():
            for bind in fcfg.binds:
                key = _config.bind_to_endpoint(bind)
                if key in bound:
                    continue                    # kept, or handed over from a frontend that drops it
                port = self._listen(bind, _PendingFactory(name), "frontends.%s.bind" % name, errors)
                if port is not None:
                    opened.setdefault(name, {})[key] = port
        return opened

    def _reload_apply(self, new: _config.Config, opened: dict[str, dict[str, Any]]) -> list[str]:
        """Apply a validated configuration whose new addresses are bound; cannot fail."""
        from lbd.logsetup import set_level

        old = self.config
        pool = self.pool
        changes: list[str] = []
        if new.global_.maxconn != old.global_.maxconn:
            pool.maxconn = new.global_.maxconn
            changes.append("global.maxconn is now %d" % new.global_.maxconn)
        if new.log.level != old.log.level:
            set_level(new.log.level)
            changes.append("log.level is now %s" % new.log.level)
        for section, differs in (("admin", new.admin != old.admin), ("metrics", new.metrics != old.metrics),
                                 ("log", (new.log.access, new.log.format) != (old.log.access, old.log.format))):
            if differs:
                self.log.warn("reload: changes to [{section}] take effect at the next restart", section=section)

        # Backends first: frontends point at them.
        for name in [n for n in pool.backends if n not in new.backends]:
            gone = pool.backends.pop(name)
            gone.removed = True
            for srv in gone.servers.values():
                self.stop_checker(srv)
            changes.append("backend %s removed (its connections finish)" % name)
        for name, bcfg in new.backends.items():
            be = pool.backends.get(name)
            if be is None:
                be = pool.add_backend(bcfg)
                for srv in be.servers.values():
                    self.start_checker(srv)
                changes.append("backend %s added" % name)
            else:
                self._reload_backend(be, bcfg, changes)
        _reorder(pool.backends, list(new.backends))
        self.deleted_servers = {
            (b, s) for b, s in self.deleted_servers
            if b in new.backends and any(sc.name == s for sc in new.backends[b].servers)
        }

        # Frontends: ports of dropped addresses may go to another frontend that now lists them.
        released: dict[str, Any] = {}
        for name in [n for n in self.contexts if n not in new.frontends]:
            released.update(self._retire_frontend(name))
            changes.append("frontend %s removed (no longer listening; its connections finish)" % name)
        for name, fcfg in new.frontends.items():
            ctx = self.contexts.get(name)
            if ctx is not None:
                bmap = self._bind_map(name)
                keys = {_config.bind_to_endpoint(b) for b in fcfg.binds}
                for key in [k for k in bmap if k not in keys]:
                    released[key] = bmap.pop(key)
        for name, fcfg in new.frontends.items():
            ctx = self.contexts.get(name)
            if ctx is None:
                fe = Frontend(fcfg, pool.next_iid())
                pool.frontends[name] = fe
                ctx = ProxyContext(self.reactor, pool, fe, self.access)
                self.contexts[name] = ctx
                self._bind_ports[name] = {}
                changed = False
                changes.append("frontend %s added" % name)
            else:
                fe = ctx.frontend
                was = fe.cfg
                fe.cfg = fcfg
                if fcfg.maxconn != was.maxconn:
                    fe.maxconn = fcfg.maxconn
                changed = fcfg != was
                if changed:
                    # A new context for new connections; established ones keep theirs,
                    # and with it the backend they were counted against.
                    ctx = ProxyContext(self.reactor, pool, fe, self.access)
                    self.contexts[name] = ctx
                    changes.append("frontend %s updated" % name)
            bmap = self._bind_map(name)
            ports = []
            for bind in fcfg.binds:
                key = _config.bind_to_endpoint(bind)
                port = bmap.get(key)
                if port is None:
                    port = opened.get(name, {}).get(key)
                    if port is None:
                        port = released.pop(key, None)
                    if port is None:
                        continue                # an endpoint that binds asynchronously
                    _set_port_factory(port, frontend_factory(ctx))
                    bmap[key] = port
                elif changed:
                    _set_port_factory(port, frontend_factory(ctx))
                ports.append(port)
            self.ports[name] = ports
            fe.listening = bool(ports)
        for port in released.values():
            port.stopListening()
        _reorder(pool.frontends, list(new.frontends))
        _reorder(self.contexts, list(new.frontends))
        self.retired_frontends = [fe for fe in self.retired_frontends if fe.sessions]
        self.config = new
        return changes

    def _retire_frontend(self, name: str) -> dict[str, Any]:
        """Stop a frontend taking connections; its established ones finish. Returns its ports."""
        ctx = self.contexts.pop(name)
        fe = ctx.frontend
        self.pool.frontends.pop(name, None)
        fe.removed = True
        fe.listening = False
        ports = self._bind_ports.pop(name, {})
        self.ports.pop(name, None)
        if fe.sessions:
            self.retired_frontends.append(fe)
            for session in list(fe.sessions):
                # http: finish the request under way, then close; tcp: nothing to do, the stream runs on.
                close = getattr(session, "graceful_close", None)
                if close is not None:
                    close()
        return ports

    def _reload_backend(self, be: Backend, new: _config.BackendConfig, changes: list[str]) -> None:
        from lbd.balance import make_balancer

        old = be.cfg
        health_changed = new.health != old.health
        be.cfg = new
        if new.balance != old.balance:
            be.balancer = make_balancer(new.balance, be)
        if _replace(old, servers=()) != _replace(new, servers=()):
            changes.append("backend %s updated" % be.name)
        wanted = {s.name: s for s in new.servers}
        for name, current in list(be.servers.items()):
            if name not in wanted and not current.added:
                be.remove_server(name)
                changes.append("server %s/%s removed (its connections finish)" % (be.name, name))
        for scfg in new.servers:
            srv = be.servers.get(scfg.name)
            if srv is None:
                if (be.name, scfg.name) in self.deleted_servers:
                    continue                    # deleted by an operator: stays deleted
                srv = be.add_server(scfg)
                self.start_checker(srv)
                changes.append("server %s/%s added" % (be.name, scfg.name))
            elif self._reload_server(be, srv, scfg, health_changed):
                changes.append("server %s/%s updated" % (be.name, scfg.name))
        # Configuration order (it matters to "first" and to ties), then servers added at runtime.
        order = [n for n in wanted if n in be.servers] + [n for n in be.servers if n not in wanted]
        _reorder(be.servers, order)
        be.refresh()

    def _reload_server(self, be: Backend, srv: Server, new: _config.ServerConfig, health_changed: bool) -> bool:
        """Give ``srv`` its new settings in place; counters, health and admin state stay."""
        old = srv.cfg
        if srv.added:
            # The configuration now names a server added at runtime: it owns it from here,
            # and its maintenance state stays the operator's.
            srv.added = False
            old = _replace(old, disabled=new.disabled)
        srv.cfg = new
        if new == old and not health_changed:
            return False
        srv.host, srv.port = new.host, new.port
        if new.weight != old.weight:
            srv.iweight = new.weight
            be.set_weight(srv, new.weight)
        if new.disabled != old.disabled:
            be.set_maint(srv, new.disabled)
        if new.maxconn != old.maxconn:
            srv.maxconn = new.maxconn
        srv.checked = be.cfg.health is not None and new.check
        if health_changed or any(getattr(old, k) != getattr(new, k) for k in _CHECK_KEYS):
            self.stop_checker(srv)
            if srv.checked:
                self.start_checker(srv)
            elif not srv.up:
                be.set_operational(srv, True, "no health check any more")
        return True


# Server settings a running health check depends on.
_CHECK_KEYS = ("check", "check_address", "check_port", "host", "port", "tls", "tls_verify", "tls_sni", "tls_ca")


def _replace(obj: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(obj, **changes)


def _reorder(mapping: dict[str, Any], order: list[str]) -> None:
    """Reorder ``mapping`` in place: names in ``order`` first, in that order, then the rest."""
    keys = [k for k in order if k in mapping] + [k for k in mapping if k not in order]
    if list(mapping) == keys:
        return
    items = [(k, mapping[k]) for k in keys]
    mapping.clear()
    mapping.update(items)


def _set_port_factory(port: Any, factory: Any) -> None:
    """Make a listening port build its connections with ``factory`` (reload: new or changed frontend)."""
    current = getattr(port, "factory", None)
    if current is not None and hasattr(current, "wrappedFactory"):
        current.wrappedFactory = factory        # TLS: the port's factory wraps ours
    else:
        port.factory = factory
    factory.doStart()


class _PendingFactory(Factory):
    """Holds a port bound during reload until the real factory is set; accepts nothing meanwhile."""

    noisy = False

    def __init__(self, frontend: str) -> None:
        self.frontend = frontend

    def logPrefix(self) -> str:
        return "frontend %s (reload)" % (self.frontend,)

    def buildProtocol(self, addr: Any) -> None:
        return None
