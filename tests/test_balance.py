"""Balancing: each algorithm's sequence of picks, pinned."""
from __future__ import annotations

import random
from collections import Counter

from twisted.internet.task import Clock

from lbd import config
from lbd.balance import Random
from lbd.pool import Backend


def backend(balance: str, servers: str) -> Backend:
    c = config.loads("[backends.b]\nmode = \"tcp\"\nbalance = \"%s\"\n[backends.b.servers]\n%s" % (balance, servers))
    return Backend(c.backends["b"], Clock())


def picks(be: Backend, n: int, client: bytes = b"") -> str:
    out = []
    for _ in range(n):
        srv = be.pick(client)
        out.append(srv.name if srv is not None else "-")
    return " ".join(out)


TWO = 'a = { address = "127.0.0.1:1" }\nb = { address = "127.0.0.1:2", weight = 2 }\n'


def test_roundrobin_is_smooth_and_weighted() -> None:
    """Weights 1 and 2 give a b b a b b, not a a b b b."""
    assert picks(backend("roundrobin", TWO), 6) == "a b b a b b"


def test_roundrobin_equal_weights_alternate() -> None:
    """Equal weights alternate in configuration order."""
    be = backend("roundrobin", 'x = { address = "127.0.0.1:1" }\ny = { address = "127.0.0.1:2" }\nz = { address = "127.0.0.1:3" }\n')
    assert picks(be, 6) == "x y z x y z"


def test_roundrobin_spreads_a_heavy_weight() -> None:
    """A weight-3 server is interleaved with a weight-1 server, never taking four in a row."""
    be = backend("roundrobin", 'a = { address = "127.0.0.1:1" }\nb = { address = "127.0.0.1:2", weight = 3 }\n')
    seq = picks(be, 8)
    assert seq == "a b b b a b b b"
    assert Counter(seq.split()) == {"a": 2, "b": 6}


def test_roundrobin_weight_change_applies_at_once() -> None:
    """Setting a weight changes the very next picks' proportions."""
    be = backend("roundrobin", 'a = { address = "127.0.0.1:1" }\nb = { address = "127.0.0.1:2" }\n')
    assert picks(be, 2) == "a b"
    be.set_weight(be.servers["b"], 3)
    assert Counter(picks(be, 8).split()) == {"a": 2, "b": 6}
    be.set_weight(be.servers["b"], 0)
    assert picks(be, 3) == "a a a"


def test_static_rr_ignores_runtime_weights() -> None:
    """static-rr keeps the configured weights."""
    be = backend("static-rr", TWO)
    be.set_weight(be.servers["b"], 10)
    assert picks(be, 6) == "a b b a b b"


def test_down_and_maint_servers_take_no_traffic() -> None:
    """Only UP servers are picked; one coming back joins the rotation."""
    be = backend("roundrobin", 'a = { address = "127.0.0.1:1" }\nb = { address = "127.0.0.1:2" }\nc = { address = "127.0.0.1:3" }\n')
    be.set_operational(be.servers["b"], False, "test")
    be.set_maint(be.servers["c"], True)
    assert picks(be, 3) == "a a a"
    be.set_operational(be.servers["b"], True)
    assert Counter(picks(be, 4).split()) == {"a": 2, "b": 2}


def test_drain_takes_no_new_traffic() -> None:
    """A server in DRAIN is skipped."""
    be = backend("roundrobin", 'a = { address = "127.0.0.1:1" }\nb = { address = "127.0.0.1:2" }\n')
    be.set_drain(be.servers["a"], True)
    assert picks(be, 3) == "b b b"


def test_backups_only_when_no_active_server_is_up() -> None:
    """Backups serve only while every active server is down, and stop when one returns."""
    be = backend("roundrobin", 'a = { address = "127.0.0.1:1" }\nspare = { address = "127.0.0.1:2", backup = true }\n')
    assert picks(be, 3) == "a a a"
    be.set_operational(be.servers["a"], False, "test")
    assert picks(be, 2) == "spare spare"
    be.set_operational(be.servers["a"], True)
    assert picks(be, 2) == "a a"


def test_no_usable_server_picks_none() -> None:
    """With every server down there is nothing to pick."""
    be = backend("roundrobin", 'a = { address = "127.0.0.1:1" }\n')
    be.set_operational(be.servers["a"], False, "test")
    assert be.pick(b"") is None


def test_leastconn_picks_fewest_connections() -> None:
    """leastconn prefers the server with the fewest current connections."""
    be = backend("leastconn", 'a = { address = "127.0.0.1:1" }\nb = { address = "127.0.0.1:2" }\nc = { address = "127.0.0.1:3" }\n')
    for name in ("a", "a", "b"):
        be.take(be.servers[name])
    assert picks(be, 1) == "c"
    be.take(be.servers["c"])
    assert picks(be, 1) == "b"


def test_leastconn_ties_rotate() -> None:
    """Servers with equal load are picked in turn."""
    be = backend("leastconn", 'a = { address = "127.0.0.1:1" }\nb = { address = "127.0.0.1:2" }\n')
    assert picks(be, 4) == "a b a b"


def test_first_fills_servers_in_order() -> None:
    """first uses the first server until its maxconn, then the next."""
    be = backend("first", 'a = { address = "127.0.0.1:1", maxconn = 2 }\nb = { address = "127.0.0.1:2", maxconn = 2 }\n')
    seq = []
    for _ in range(5):
        srv = be.pick(b"")
        seq.append(srv.name if srv else "-")
        if srv:
            be.take(srv)
    assert seq == ["a", "a", "b", "b", "-"]
    be.release(be.servers["a"])
    assert picks(be, 1) == "a"


def test_source_is_stable_per_client() -> None:
    """The same client address always lands on the same server."""
    be = backend("source", 'a = { address = "127.0.0.1:1" }\nb = { address = "127.0.0.1:2" }\nc = { address = "127.0.0.1:3" }\n')
    for i in range(50):
        client = b"10.0.0.%d" % i
        first = be.pick(client)
        assert all(be.pick(client) is first for _ in range(3))


def test_source_removal_moves_only_that_servers_clients() -> None:
    """Consistent hashing: when a server leaves, only its clients move."""
    be = backend("source", "".join('s%d = { address = "127.0.0.1:%d" }\n' % (i, i + 1) for i in range(5)))
    clients = [b"192.168.%d.%d" % (i // 250, i % 250) for i in range(1000)]
    before = {c: be.pick(c).name for c in clients}
    assert len(set(before.values())) == 5
    be.set_operational(be.servers["s2"], False, "test")
    after = {c: be.pick(c).name for c in clients}
    moved = [c for c in clients if before[c] != after[c]]
    assert moved and all(before[c] == "s2" for c in moved)
    assert "s2" not in after.values()


def test_random_prefers_the_less_loaded_of_two() -> None:
    """Power of two choices never picks the busier of two distinct candidates."""
    be = backend("random", 'a = { address = "127.0.0.1:1" }\nb = { address = "127.0.0.1:2" }\n')
    be.balancer = Random(be, random.Random(42))
    be.refresh()
    for _ in range(5):
        be.take(be.servers["a"])
    seen = Counter(be.pick(b"").name for _ in range(200))
    # "a" can only win when both draws were "a" (a quarter of the time).
    assert seen["b"] > 120 and seen["a"] < 80


def test_full_servers_are_skipped() -> None:
    """A server at its maxconn is passed over by roundrobin."""
    be = backend("roundrobin", 'a = { address = "127.0.0.1:1", maxconn = 1 }\nb = { address = "127.0.0.1:2" }\n')
    be.take(be.servers["a"])
    assert picks(be, 3) == "b b b"


def test_avoid_prefers_another_server() -> None:
    """A retry that avoids its failed server gets another one when there is one."""
    be = backend("roundrobin", 'a = { address = "127.0.0.1:1" }\nb = { address = "127.0.0.1:2" }\n')
    assert be.pick(b"", be.servers["a"]).name == "b"
    assert be.pick(b"", be.servers["a"]).name == "b"


def test_leaving_maintenance_ramps_up_with_slowstart() -> None:
    """A server leaving MAINT with slowstart starts at a low weight and reaches its own over the period."""
    be = backend("roundrobin", 'a = { address = "127.0.0.1:1", weight = 10, slowstart = "10s" }\n')
    srv = be.servers["a"]
    be.set_maint(srv, True)
    be.set_maint(srv, False)
    assert srv.eweight == 1
    clock = be.clock
    clock.advance(5)  # type: ignore[attr-defined]
    assert srv.eweight == 5
    clock.advance(5)  # type: ignore[attr-defined]
    assert srv.eweight == 10
