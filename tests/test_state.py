"""The state file: admin state saved atomically, restored on start, bad files ignored."""
from __future__ import annotations

import json
import os
import tempfile

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from lbd import state
from lbd.pool import DRAIN, MAINT, UP
from tests.admin.support import BASE, make_service, run, write_config


def _with_state_file(text: str, path: str) -> str:
    return text.replace("[log]\n", '[global]\nstate_file = "%s"\n[log]\n' % path, 1)


class _Events:
    """Collects log events (lbd's loggers publish through the global publisher)."""

    def __init__(self, case: SynchronousTestCase) -> None:
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        case.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def texts(self, level: LogLevel) -> list[str]:
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.events if e.get("log_level") == level]


class FileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="lbd-state-test-")
        self.path = os.path.join(self.dir, "state.json")

    def test_round_trip(self) -> None:
        """What save writes, load reads back."""
        data = {"format": "lbd-state", "version": 1, "servers": [], "deleted": [["web", "web2"]]}
        state.save(self.path, data)
        self.assertEqual(state.load(self.path), data)

    def test_no_temp_files_left(self) -> None:
        """An atomic save leaves only the state file in its directory."""
        state.save(self.path, {"format": "lbd-state", "version": 1, "servers": []})
        state.save(self.path, {"format": "lbd-state", "version": 1, "servers": [], "deleted": []})
        self.assertEqual(os.listdir(self.dir), ["state.json"])

    def test_failed_write_keeps_old_file(self) -> None:
        """If the new content cannot be written, the old file stays whole and no temp file remains."""
        good = {"format": "lbd-state", "version": 1, "servers": []}
        state.save(self.path, good)
        with self.assertRaises(TypeError):
            state.save(self.path, {"format": "lbd-state", "servers": [object()]})
        self.assertEqual(state.load(self.path), good)
        self.assertEqual(os.listdir(self.dir), ["state.json"])

    def test_missing_file(self) -> None:
        """No file means no saved state."""
        self.assertIsNone(state.load(self.path))

    def test_truncated_file(self) -> None:
        """A truncated file is refused with a reason."""
        state.save(self.path, {"format": "lbd-state", "version": 1, "servers": [{"backend": "web"}]})
        with open(self.path, "r+b") as f:
            f.truncate(30)
        with self.assertRaises(state.StateError) as cm:
            state.load(self.path)
        self.assertTrue(str(cm.exception).startswith("it is not valid JSON (truncated or corrupt?): "))

    def test_foreign_file(self) -> None:
        """JSON that lbd did not write is refused."""
        with open(self.path, "w") as f:
            json.dump({"servers": []}, f)
        with self.assertRaises(state.StateError) as cm:
            state.load(self.path)
        self.assertEqual(str(cm.exception), "it is not an lbd state file")

    def test_haproxy_state_file(self) -> None:
        """An HAProxy server-state file is refused, not misread."""
        with open(self.path, "w") as f:
            f.write("1\n# be_id be_name srv_id\n3 web 1 web1 127.0.0.1 2 0 1 1\n")
        self.assertRaises(state.StateError, state.load, self.path)

    def test_other_version(self) -> None:
        """A file of another format version is refused."""
        with open(self.path, "w") as f:
            json.dump({"format": "lbd-state", "version": 2, "servers": []}, f)
        with self.assertRaises(state.StateError) as cm:
            state.load(self.path)
        self.assertEqual(str(cm.exception), "it has version 2; this lbd reads version 1")


class SnapshotRestoreTests(SynchronousTestCase):
    def _round_trip(self, before_line: str) -> object:
        """Apply commands to one service, snapshot, restore into a fresh one; return the fresh one."""
        a = make_service()
        run(a, before_line)
        data = json.loads(json.dumps(state.snapshot(a.pool, a.deleted_servers)))
        b = make_service()
        result = state.restore(b.pool, data)
        b.deleted_servers = result.deleted
        return b

    def test_maint_drain_weight(self) -> None:
        """Maintenance, drain and weights come back."""
        b = self._round_trip("disable server web/web1; set server web/web2 state drain; set weight static/s1 0")
        servers = b.pool.backends["web"].servers
        self.assertEqual((servers["web1"].state, servers["web2"].state), (MAINT, DRAIN))
        self.assertEqual(b.pool.backends["static"].servers["s1"].uweight, 0)

    def test_health_disabled(self) -> None:
        """A disabled health check stays disabled."""
        b = self._round_trip("disable health web/web2")
        self.assertTrue(b.pool.backends["web"].servers["web2"].health_disabled)

    def test_added_server(self) -> None:
        """A server added at runtime is added again, with its settings and state."""
        b = self._round_trip("add server web/web3 10.0.0.3:81 weight 5 backup check; enable server web/web3")
        srv = b.pool.backends["web"].servers["web3"]
        self.assertEqual((srv.address, srv.iweight, srv.cfg.backup, srv.checked, srv.added, srv.state),
                         ("10.0.0.3:81", 5, True, True, True, UP))

    def test_added_server_stays_in_maint(self) -> None:
        """A server added but never enabled is restored in maintenance."""
        b = self._round_trip("add server web/web3 10.0.0.3:81")
        self.assertEqual(b.pool.backends["web"].servers["web3"].state, MAINT)

    def test_deleted_server(self) -> None:
        """A configured server deleted at runtime stays deleted."""
        b = self._round_trip("disable server web/web2; del server web/web2")
        self.assertEqual(list(b.pool.backends["web"].servers), ["web1"])
        self.assertEqual(b.deleted_servers, {("web", "web2")})

    def test_weight_ignored_when_config_changed(self) -> None:
        """A saved weight based on another configured weight gives way to the configuration."""
        a = make_service()
        run(a, "set weight web/web1 9")
        data = state.snapshot(a.pool)
        b = make_service(BASE.replace("weight = 2", "weight = 4"))
        state.restore(b.pool, data)
        self.assertEqual(b.pool.backends["web"].servers["web1"].uweight, 4)

    def test_maint_ignored_when_config_disabled_changed(self) -> None:
        """Enabling a server in the file wins over an older saved maintenance."""
        disabled = BASE.replace('web2 = { address = "10.0.0.2:8080" }',
                                'web2 = { address = "10.0.0.2:8080", disabled = true }')
        a = make_service(disabled)
        data = state.snapshot(a.pool)
        b = make_service()
        state.restore(b.pool, data)
        self.assertEqual(b.pool.backends["web"].servers["web2"].state, UP)

    def test_unknown_server_reported(self) -> None:
        """Saved state for a server the configuration no longer has is dropped with a remark."""
        data = {"format": "lbd-state", "version": 1, "deleted": [],
                "servers": [{"backend": "web", "server": "old", "maint": True, "drain": False, "weight": 1,
                             "iweight": 1, "cfg_disabled": False, "health_disabled": False}]}
        result = state.restore(make_service().pool, data)
        self.assertEqual(result.messages, ["server web/old is no longer configured: its saved state is dropped"])

    def test_bad_entry_skipped(self) -> None:
        """A malformed entry is skipped; the others still apply."""
        data = {"format": "lbd-state", "version": 1, "deleted": [],
                "servers": [{"backend": "web", "server": "web1", "maint": "yes"},
                            {"backend": "web", "server": "web2", "maint": True, "drain": False, "weight": 1,
                             "iweight": 1, "cfg_disabled": False, "health_disabled": False}]}
        b = make_service()
        result = state.restore(b.pool, data)
        self.assertEqual(result.messages, ["ignored the entry 'web/web1': maint is not true or false"])
        self.assertEqual(b.pool.backends["web"].servers["web2"].state, MAINT)


class ServiceStateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="lbd-state-svc-")
        self.state_path = os.path.join(self.dir, "state.json")
        self.text = _with_state_file(BASE, self.state_path)

    def _start(self) -> object:
        service = make_service(self.text, reactor=MemoryReactorClock())
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def test_commands_save_state(self) -> None:
        """An admin change is written to the state file at once."""
        service = make_service(self.text)
        run(service, "disable server web/web1")
        saved = state.load(self.state_path)
        assert saved is not None
        web1 = [s for s in saved["servers"] if s["server"] == "web1"][0]
        self.assertTrue(web1["maint"])

    def test_restart_restores(self) -> None:
        """A new service started on the same state file comes back with the admin state."""
        run(make_service(self.text), "disable server web/web1; set weight web/web2 7")
        service = self._start()
        servers = service.pool.backends["web"].servers
        self.assertEqual((servers["web1"].state, servers["web2"].uweight), (MAINT, 7))

    def test_truncated_file_reported_and_ignored(self) -> None:
        """A truncated state file is logged as ignored, and lbd starts with the configuration's state."""
        run(make_service(self.text), "disable server web/web1")
        with open(self.state_path, "r+b") as f:
            f.truncate(40)
        events = _Events(self)
        service = self._start()
        self.assertEqual(service.pool.backends["web"].servers["web1"].state, UP)
        errors = [t for t in events.texts(LogLevel.error) if t.startswith("state file ")]
        self.assertEqual(len(errors), 1)
        self.assertTrue(errors[0].startswith(
            "state file %s ignored: it is not valid JSON (truncated or corrupt?): " % self.state_path))

    def test_unwritable_state_file_logged(self) -> None:
        """A state file that cannot be written is logged; the command still succeeds."""
        text = _with_state_file(BASE, os.path.join(self.dir, "missing-dir", "state.json"))
        service = make_service(text)
        events = _Events(self)
        self.assertEqual(run(service, "disable server web/web1"), "\n")
        self.assertEqual([t for t in events.texts(LogLevel.error) if "state file" in t],
                         ["cannot write the state file %s: No such file or directory"
                          % os.path.join(self.dir, "missing-dir", "state.json")])

    def test_disabled_health_not_started(self) -> None:
        """A server whose check was disabled is not checked after a restart."""
        run(make_service(self.text), "disable health web/web2")
        service = self._start()
        self.assertEqual(service.checks, [("start", "web/web1")])

    def test_no_state_file_configured(self) -> None:
        """Without global.state_file nothing is written."""
        service = make_service()
        run(service, "disable server web/web1")
        self.assertFalse(os.path.exists(self.state_path))

    def test_config_path_untouched(self) -> None:
        """The state file lives apart from the configuration."""
        path = write_config(self.text, self.dir)
        run(make_service(path=path), "disable server web/web1")
        self.assertEqual(sorted(os.listdir(self.dir)), ["lbd.toml", "state.json"])
