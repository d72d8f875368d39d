"""The state file: admin state that survives a restart (``global.state_file``).

What an operator decided at runtime: maintenance, drain, weights, disabled
health checks, servers added with ``add server`` and servers removed with
``del server``. Health (UP/DOWN) is not saved: checks find it again.

The file is JSON, written atomically (a temporary file in the same
directory, fsync, rename, fsync of the directory), so a crash leaves either
the old file or the new one. A file that cannot be read, is truncated, or was
not written by lbd is reported and ignored, never fatal.

Precedence, as HAProxy's server-state-file: a saved weight applies only if the
configured weight is still the one it was based on; a saved maintenance flag
applies unless the configuration's ``disabled`` changed since. An edit of the
file therefore wins over older runtime decisions about the same setting.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from lbd import config as _config

if TYPE_CHECKING:
    from lbd.pool import Pool, Server

FORMAT = "lbd-state"
VERSION = 1
MAX_SIZE = 16 * 1024 * 1024


class StateError(Exception):
    """The state file exists but cannot be used; the message says why."""


def snapshot(pool: Pool, deleted: Iterable[tuple[str, str]] = ()) -> dict[str, Any]:
    """The admin state of ``pool`` as a JSON-ready dict."""
    servers = []
    for be in pool.backends.values():
        for srv in be.servers.values():
            rec: dict[str, Any] = {
                "backend": be.name,
                "server": srv.name,
                "maint": srv.maint,
                "drain": srv.drain,
                "weight": srv.uweight,
                "iweight": srv.iweight,
                "cfg_disabled": srv.cfg.disabled,
                "health_disabled": srv.health_disabled,
            }
            if srv.added:
                cfg = srv.cfg
                rec["added"] = {
                    "address": cfg.address,
                    "weight": cfg.weight,
                    "backup": cfg.backup,
                    "check": cfg.check,
                }
            servers.append(rec)
    return {
        "format": FORMAT,
        "version": VERSION,
        "servers": servers,
        "deleted": sorted([b, s] for b, s in deleted),
    }


def save(path: str, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically; raises OSError."""
    directory = os.path.dirname(os.path.abspath(path))
    payload = (json.dumps(data, indent=1, sort_keys=True) + "\n").encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o640)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - a directory we cannot open: the rename is done anyway
        return
    try:
        os.fsync(dfd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dfd)


def load(path: str) -> dict[str, Any] | None:
    """The saved state, None when there is no file; raises StateError when it is unusable."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SIZE + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StateError("cannot read it: %s" % (e.strerror or e,))
    if len(raw) > MAX_SIZE:
        raise StateError("it is larger than %d bytes" % MAX_SIZE)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise StateError("it is not valid JSON (truncated or corrupt?): %s" % (e,))
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise StateError("it is not an lbd state file")
    if data.get("version") != VERSION:
        raise StateError("it has version %r; this lbd reads version %d" % (data.get("version"), VERSION))
    if not isinstance(data.get("servers"), list) or not isinstance(data.get("deleted", []), list):
        raise StateError("it is not an lbd state file (no server list)")
    return data


@dataclass
class Restored:
    """What ``restore`` did: servers it added, servers still deleted, and remarks to log."""

    added: list[Server] = field(default_factory=list)
    deleted: set[tuple[str, str]] = field(default_factory=set)
    applied: int = 0
    messages: list[str] = field(default_factory=list)


def _bool(rec: dict[str, Any], key: str) -> bool:
    value = rec.get(key, False)
    if not isinstance(value, bool):
        raise ValueError("%s is not true or false" % key)
    return value


def _weight(rec: dict[str, Any], key: str) -> int:
    value = rec.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _config.MAX_WEIGHT:
        raise ValueError("%s is not a weight (0-%d)" % (key, _config.MAX_WEIGHT))
    return value


def restore(pool: Pool, data: dict[str, Any]) -> Restored:
    """Apply saved admin state to a freshly built pool (before checks start)."""
    out = Restored()
    for item in data.get("deleted", []):
        if (not isinstance(item, list) or len(item) != 2
                or not all(isinstance(x, str) for x in item)):
            out.messages.append("ignored a malformed deleted-server entry %r" % (item,))
            continue
        bname, sname = item
        be = pool.backends.get(bname)
        if be is None or sname not in be.servers or be.servers[sname].added:
            continue                          # gone from the configuration: nothing to hide any more
        be.remove_server(sname)
        out.deleted.add((bname, sname))
    for rec in data["servers"]:
        try:
            _restore_server(pool, rec, out)
        except (ValueError, TypeError, KeyError) as e:
            out.messages.append("ignored the entry %r: %s" % (_describe(rec), e))
    return out


def _describe(rec: Any) -> str:
    if isinstance(rec, dict):
        return "%s/%s" % (rec.get("backend"), rec.get("server"))
    return repr(rec)[:60]


def _restore_server(pool: Pool, rec: Any, out: Restored) -> None:
    if not isinstance(rec, dict) or not isinstance(rec.get("backend"), str) or not isinstance(rec.get("server"), str):
        raise ValueError("not a server entry")
    bname, sname = rec["backend"], rec["server"]
    be = pool.backends.get(bname)
    if be is None:
        out.messages.append("backend %s is no longer configured: its saved state is dropped" % (bname,))
        return
    maint = _bool(rec, "maint")
    drain = _bool(rec, "drain")
    health_disabled = _bool(rec, "health_disabled")
    weight = _weight(rec, "weight")
    srv = be.servers.get(sname)
    added = rec.get("added")
    if added is not None:
        if srv is not None:
            # The configuration now names this server: it owns it, the saved admin state still applies.
            pass
        else:
            if not isinstance(added, dict) or not isinstance(added.get("address"), str):
                raise ValueError("an added server without an address")
            host, port = _config.parse_address(added["address"])
            opts = {
                "weight": _weight(added, "weight"),
                "backup": _bool(added, "backup"),
                "check": _bool(added, "check") and be.cfg.health is not None,
                "disabled": True,
            }
            checker = _config._Checker("state file", {})
            scfg = _config.build_server(checker, sname, host, port, opts, ("backends", bname, "servers", sname))
            if checker.errors:
                raise ValueError("; ".join(text for _, text in checker.errors))
            srv = be.add_server(scfg)
            srv.added = True
            out.added.append(srv)
    if srv is None:
        out.messages.append("server %s/%s is no longer configured: its saved state is dropped" % (bname, sname))
        return
    if rec.get("iweight", srv.iweight) == srv.iweight and weight != srv.uweight:
        be.set_weight(srv, weight)
    cfg_disabled = rec.get("cfg_disabled", srv.cfg.disabled)
    if srv.added or cfg_disabled == srv.cfg.disabled:
        if drain and not maint:
            be.set_drain(srv, True)
            be.set_maint(srv, False)
        elif maint:
            be.set_maint(srv, True)
            be.set_drain(srv, False)
        else:
            be.set_drain(srv, False)
            be.set_maint(srv, False)
    srv.health_disabled = health_disabled
    out.applied += 1
