"""An http-mode frontend on a MemoryReactorClock, with fake client and server transports."""
from __future__ import annotations

import os
import tempfile
import weakref
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from lbd import config
from lbd.accesslog import AccessLog
from lbd.http.relay import HTTPFrontendFactory, HTTPSession, ServerConnection
from lbd.pool import Backend, Pool, Server
from lbd.tcp import ProxyContext
from lbd.testing import FakeTCPTransport

CONFIG = """\
[log]
access = "{access}"
format = "{log_format}"
[defaults]
mode = "http"
retries = {retries}
redispatch = {redispatch}
[defaults.timeout]
connect = "2s"
client = "30s"
server = "20s"
http_request = "10s"
keep_alive = "5s"
queue = "3s"
tunnel = "60s"
[frontends.f]
bind = "127.0.0.1:8080"
{default_backend}
{frontend}
[backends.b]
{backend}
[backends.b.servers]
{servers}
{more}
"""

TWO_SERVERS = 's1 = { address = "127.0.0.1:9001" }\ns2 = { address = "127.0.0.1:9002" }'
ONE_SERVER = 's1 = { address = "127.0.0.1:9001" }'


class RecordingTransport(FakeTCPTransport):
    """A fake TCP transport that also keeps each write separately."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        assert isinstance(data, bytes), type(data)
        self.writes.append(data)
        super().write(data)


class Harness:
    """Builds a frontend ``f`` with backend ``b`` from a few config fragments."""

    def __init__(self, servers: str = TWO_SERVERS, frontend: str = "", backend: str = "",
                 default_backend: str = 'default_backend = "b"', retries: int = 2,
                 redispatch: bool = True, more: str = "", access: bool = True,
                 log_format: str = "haproxy") -> None:
        self.tmp = tempfile.mkdtemp(prefix="lbd-http-test-")
        self.access_path = os.path.join(self.tmp, "access.log")
        text = CONFIG.format(access=self.access_path if access else "off", log_format=log_format, retries=retries,
                             redispatch=str(redispatch).lower(), default_backend=default_backend,
                             frontend=frontend, backend=backend, servers=servers, more=more)
        self.cfg = config.loads(text, path=os.path.join(self.tmp, "lbd.toml"))
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1000.0)
        self.pool = Pool(self.reactor, 1000)
        for bcfg in self.cfg.backends.values():
            self.pool.add_backend(bcfg)
        self.backend: Backend = self.pool.backends["b"]
        fe = self.pool.add_frontend(self.cfg.frontends["f"])
        self.access = AccessLog(self.cfg.log)
        weakref.finalize(self, self.access.close)
        self.ctx = ProxyContext(self.reactor, self.pool, fe, self.access)
        self.factory = HTTPFrontendFactory(self.ctx)
        self.frontend = fe
        self._accepted = 0

    def server(self, name: str, backend: str = "b") -> Server:
        return self.pool.backends[backend].servers[name]

    def client(self, peer: tuple[str, int] = ("10.0.0.1", 40000)) -> tuple[HTTPSession, RecordingTransport]:
        session = self.factory.buildProtocol(IPv4Address("TCP", *peer))
        transport = RecordingTransport(peer=peer)
        session.makeConnection(transport)
        return session, transport

    def connects(self) -> list[tuple[str, int]]:
        return [(c[0], c[1]) for c in self.reactor.tcpClients]

    def accept(self, index: int = -1) -> tuple[ServerConnection, RecordingTransport]:
        """The server accepts connect attempt ``index``."""
        host, port, factory = self.reactor.tcpClients[index][:3]
        proto = factory.buildProtocol(IPv4Address("TCP", host, port))
        self._accepted += 1
        transport = RecordingTransport(peer=(host, port), host=("127.0.0.1", 50000 + self._accepted))
        proto.makeConnection(transport)
        return proto, transport

    def refuse(self, index: int = -1) -> None:
        factory = self.reactor.tcpClients[index][2]
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))

    def access_lines(self) -> list[str]:
        """Access-log lines without the client address and date (``FRONTEND ...`` onwards)."""
        if not os.path.exists(self.access_path):
            return []
        with open(self.access_path) as f:
            return [line.rstrip("\n").split("] ", 1)[1] for line in f]

    def raw_access_lines(self) -> list[str]:
        with open(self.access_path) as f:
            return [line.rstrip("\n") for line in f]


def close(proto: Any, transport: FakeTCPTransport, clean: bool = True) -> None:
    """The peer closed: the transport is gone and the protocol hears about it."""
    transport.disconnecting = True
    reason = Failure(ConnectionDone()) if clean else Failure(ConnectionLost())
    proto.connectionLost(reason)


def response(body: bytes = b"hello", status: bytes = b"200 OK", headers: bytes = b"") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n%s\r\n%s" % (status, len(body), headers, body)


GET = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"
