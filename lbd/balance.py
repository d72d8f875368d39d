"""Balancing algorithms behind one interface.

The backend pushes changes in (``update`` when the set of usable servers or a
weight changes, ``taken``/``released`` per connection), so ``pick`` stays cheap.
``update`` is O(n log n) and happens on state changes only.
"""
from __future__ import annotations

import bisect
import hashlib
import heapq
import random as _random
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from lbd.pool import Backend, Server

# Virtual-time step of a weight-1 server in the round-robin schedule; a power
# of two keeps the common weight ratios exact.
_VT_SCALE = 1 << 40


class Balancer:
    """Base: picks among the servers handed to ``update`` (active, or backups)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.servers: list[Server] = []

    def update(self, servers: Sequence[Server]) -> None:
        self.servers = list(servers)

    def taken(self, srv: Server) -> None:
        pass

    def released(self, srv: Server) -> None:
        pass

    def pick(self, client: bytes, avoid: Server | None = None) -> Server | None:
        raise NotImplementedError

    def _fallback(self, avoid: Server | None) -> Server | None:
        """When the algorithm's choice is full or avoided: the first that is not."""
        for srv in self.servers:
            if srv is not avoid and not srv.full:
                return srv
        if avoid is not None and avoid in self.servers and not avoid.full:
            return avoid
        return None


class RoundRobin(Balancer):
    """Smooth weighted round robin (earliest virtual deadline first).

    Each server has a deadline in virtual time; the earliest is picked and its
    deadline moves on by SCALE/weight. Weights 1 and 2 give a b b a b b. A
    weight change takes effect at the next pick; a server coming back joins
    at the current virtual time, so it gets no burst.
    """

    dynamic = True

    def __init__(self, backend: Backend) -> None:
        super().__init__(backend)
        self.heap: list[tuple[int, int, Server]] = []
        self.vt = 0
        self.deadline: dict[Server, int] = {}

    def _weight(self, srv: Server) -> int:
        return srv.eweight if self.dynamic else srv.iweight

    def update(self, servers: Sequence[Server]) -> None:
        super().update(servers)
        heap = []
        deadline = {}
        for order, srv in enumerate(self.servers):
            if self._weight(srv) <= 0:
                continue
            d = self.deadline.get(srv, self.vt)
            if d < self.vt:
                d = self.vt
            deadline[srv] = d
            heap.append((d, order, srv))
        heapq.heapify(heap)
        self.heap = heap
        self.deadline = deadline

    def pick(self, client: bytes, avoid: Server | None = None) -> Server | None:
        heap = self.heap
        if not heap:
            return None
        skipped = []
        chosen = None
        while heap:
            d, order, srv = heap[0]
            if srv is avoid or srv.full:
                skipped.append(heapq.heappop(heap))
                continue
            chosen = srv
            self.vt = d
            nd = d - (-_VT_SCALE // self._weight(srv))   # ceil: rounding never jumps a tie
            self.deadline[srv] = nd
            heapq.heapreplace(heap, (nd, order, srv))
            break
        for item in skipped:
            heapq.heappush(heap, item)
        if chosen is None and avoid is not None and not avoid.full:
            return avoid if avoid in self.deadline else None
        return chosen


class StaticRoundRobin(RoundRobin):
    """As roundrobin, but with the configured weights: runtime changes are ignored (HAProxy's static-rr)."""

    dynamic = False


class LeastConn(Balancer):
    """Fewest current connections relative to weight; ties rotate."""

    def __init__(self, backend: Backend) -> None:
        super().__init__(backend)
        self.rr = 0

    def pick(self, client: bytes, avoid: Server | None = None) -> Server | None:
        servers = self.servers
        n = len(servers)
        if not n:
            return None
        best = None
        best_load = 0.0
        start = self.rr % n
        for i in range(n):
            srv = servers[(start + i) % n]
            if srv is avoid or srv.full or srv.eweight <= 0:
                continue
            load = (srv.cur_sess + 1) / srv.eweight
            if best is None or load < best_load:
                best = srv
                best_load = load
        self.rr = start + 1
        if best is None:
            return self._fallback(avoid)
        return best


class First(Balancer):
    """The first server (config order) with a free slot (HAProxy's ``first``)."""

    def pick(self, client: bytes, avoid: Server | None = None) -> Server | None:
        for srv in self.servers:
            if srv is not avoid and not srv.full:
                return srv
        return self._fallback(avoid)


class Source(Balancer):
    """Consistent hashing of the client address.

    Each server owns ``weight * 40`` points on a ring; a client goes to the
    next point after its hash. Removing a server moves only its clients.
    """

    POINTS = 40

    def __init__(self, backend: Backend) -> None:
        super().__init__(backend)
        self.ring: list[int] = []
        self.owners: list[Server] = []
        self._points: dict[tuple[str, int], list[int]] = {}

    def _server_points(self, srv: Server) -> list[int]:
        key = (srv.name, srv.eweight)
        pts = self._points.get(key)
        if pts is None:
            pts = [_hash(("%s-%d" % (srv.name, i)).encode()) for i in range(srv.eweight * self.POINTS)]
            self._points[key] = pts
        return pts

    def update(self, servers: Sequence[Server]) -> None:
        super().update(servers)
        pairs = []
        for srv in self.servers:
            for p in self._server_points(srv):
                pairs.append((p, srv.sid, srv))
        pairs.sort(key=lambda t: (t[0], t[1]))
        self.ring = [p for p, _, _ in pairs]
        self.owners = [s for _, _, s in pairs]

    def pick(self, client: bytes, avoid: Server | None = None) -> Server | None:
        ring = self.ring
        if not ring:
            return None
        i = bisect.bisect(ring, _hash(client))
        n = len(ring)
        for step in range(n):
            srv = self.owners[(i + step) % n]
            if srv is not avoid and not srv.full:
                return srv
        return self._fallback(avoid)


class Random(Balancer):
    """Power of two choices: two random servers (by weight), the less loaded wins."""

    def __init__(self, backend: Backend, rng: _random.Random | None = None) -> None:
        super().__init__(backend)
        self.rng = rng or _random.Random()
        self.cum: list[int] = []
        self.total = 0

    def update(self, servers: Sequence[Server]) -> None:
        super().update(servers)
        cum = []
        total = 0
        for srv in self.servers:
            total += max(srv.eweight, 0)
            cum.append(total)
        self.cum = cum
        self.total = total

    def _draw(self) -> Server:
        return self.servers[bisect.bisect_right(self.cum, self.rng.randrange(self.total))]

    def pick(self, client: bytes, avoid: Server | None = None) -> Server | None:
        if not self.total:
            return None
        a = self._draw()
        b = self._draw()
        if (b.cur_sess * a.eweight) < (a.cur_sess * b.eweight):
            a, b = b, a
        for srv in (a, b):
            if srv is not avoid and not srv.full:
                return srv
        return self._fallback(avoid)


def _hash(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


_ALGORITHMS: dict[str, type[Balancer]] = {
    "roundrobin": RoundRobin,
    "static-rr": StaticRoundRobin,
    "leastconn": LeastConn,
    "first": First,
    "source": Source,
    "random": Random,
}


def make_balancer(name: str, backend: Backend) -> Balancer:
    return _ALGORITHMS[name](backend)
