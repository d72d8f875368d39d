"""TLS in http mode over real loopback sockets: ssl: frontend binds, verified server TLS, verification failure."""
from __future__ import annotations

import datetime
import os
import tempfile
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import defer, reactor as _reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, serverFromString, wrapClientTLS
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from lbd import config
from lbd.accesslog import AccessLog
from lbd.http.relay import HTTPFrontendFactory
from lbd.pool import Pool
from lbd.tcp import ProxyContext

reactor: Any = _reactor


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(cn: str) -> tuple[Any, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_leaf(ca_key: Any, ca_cert: x509.Certificate, dns: str) -> tuple[bytes, bytes]:
    """A certificate for ``dns`` signed by the CA, as (key PEM, cert PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(dns)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return _pem_key(key), cert.public_bytes(serialization.Encoding.PEM)


class Recorder(Protocol):
    """A tiny keep-alive HTTP server: answers each head with 200 "ok" and keeps what it got."""

    def __init__(self, seen: list[bytes]) -> None:
        self.seen = seen
        self.buf = b""

    def dataReceived(self, data: bytes) -> None:
        self.seen.append(data)
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            _, _, self.buf = self.buf.partition(b"\r\n\r\n")
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")  # type: ignore[union-attr]


class Fetch(Protocol):
    """Sends one request, reads the response head and Content-Length body, then closes."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.data = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        head, sep, body = self.data.partition(b"\r\n\r\n")
        if sep:
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:") and len(body) >= int(line.split(b":")[1]):
                    self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        self.done.callback(self.data)


REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"


class TLSTests(TestCase):
    def setUp(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="lbd-tls-")
        self.ca_key, self.ca = make_ca("lbd test CA")
        self.ca_path = self._write("ca.pem", self.ca.public_bytes(serialization.Encoding.PEM))
        key, cert = make_leaf(self.ca_key, self.ca, "localhost")
        self.key_path = self._write("key.pem", key)
        self.cert_path = self._write("cert.pem", cert)
        self.ports: list[Any] = []
        self.seen: list[bytes] = []
        self.sessions: list[Any] = []
        self.addCleanup(self._only_known_warnings)

    def _only_known_warnings(self) -> None:
        """Twisted's own CertificateOptions hands pyOpenSSL objects to the newest pyOpenSSL, which
        deprecates that; it happens inside Twisted for every TLS server (ssl: binds included), not
        in lbd. Any other warning still fails the test."""
        for w in self.flushWarnings():
            if not (w["category"] is DeprecationWarning and w["message"].startswith("Passing pyOpenSSL ")):
                self.fail("unexpected warning: %s: %s" % (w["category"].__name__, w["message"]))

    def _write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    async def _cleanup(self, pool: Pool) -> None:
        # Pooled server connections and the listeners belong to the test: close them all.
        closing = []
        for srv in pool.all_servers():
            for sc in list(srv.idle):
                closing.append(sc)
                sc.transport.abortConnection()
        for port in self.ports:
            await defer.maybeDeferred(port.stopListening)
        for _ in range(100):
            if all(sc.lost for sc in closing) and all(not s.transport.connected for s in self.sessions):
                break
            await _sleep(0.01)

    def _backend(self, tls: bool) -> int:
        factory = Factory.forProtocol(lambda: Recorder(self.seen))
        factory.noisy = False
        if tls:
            with open(self.key_path, "rb") as f, open(self.cert_path, "rb") as g:
                pc = PrivateCertificate.loadPEM(f.read() + g.read())
            port = reactor.listenSSL(0, factory, pc.options(), interface="127.0.0.1")
        else:
            port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.ports.append(port)
        return int(port.getHost().port)

    def _lbd(self, bind: str, server_opts: str, backend_port: int) -> tuple[Pool, int]:
        cfg = config.loads("""\
[log]
access = "off"
[defaults.timeout]
connect = "2s"
server = "5s"
[frontends.f]
bind = "127.0.0.1:1"
default_backend = "b"
[backends.b]
retries = 1
[backends.b.servers]
s1 = { address = "127.0.0.1:%d"%s }
""" % (backend_port, server_opts))
        pool = Pool(reactor, 100)
        pool.add_backend(cfg.backends["b"])
        fe = pool.add_frontend(cfg.frontends["f"])
        factory = HTTPFrontendFactory(ProxyContext(reactor, pool, fe, AccessLog(cfg.log)))
        build = factory.buildProtocol

        def tracking(addr: Any) -> Any:
            p = build(addr)
            self.sessions.append(p)
            return p

        factory.buildProtocol = tracking  # type: ignore[method-assign]
        endpoint = serverFromString(reactor, bind)
        d = endpoint.listen(factory)
        ports: list[Any] = []
        d.addCallback(ports.append)
        self.ports.append(ports[0])
        return pool, int(ports[0].getHost().port)

    async def _fetch(self, port: int, tls: bool) -> bytes:
        endpoint: Any = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        if tls:
            endpoint = wrapClientTLS(optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(
                self.ca.public_bytes(serialization.Encoding.PEM))), endpoint)
        proto = Fetch(REQUEST)
        await connectProtocol(endpoint, proto)
        return await proto.done

    @defer.inlineCallbacks
    def test_ssl_bind_serves_https_and_says_so(self) -> Any:
        """An ssl: bind terminates TLS; the server gets the request with X-Forwarded-Proto: https."""
        backend = self._backend(tls=False)
        pool, port = self._lbd("ssl:0:interface=127.0.0.1:privateKey=%s:certKey=%s" % (self.key_path, self.cert_path),
                               "", backend)
        try:
            answer = yield defer.ensureDeferred(self._fetch(port, tls=True))
            self.assertEqual(answer, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            self.assertIn(b"X-Forwarded-Proto: https\r\n", b"".join(self.seen))
        finally:
            yield defer.ensureDeferred(self._cleanup(pool))

    @defer.inlineCallbacks
    def test_server_tls_verified_with_tls_ca(self) -> Any:
        """tls = true with tls_ca and tls_sni: lbd verifies the server certificate and proxies."""
        backend = self._backend(tls=True)
        pool, port = self._lbd("tcp:0:interface=127.0.0.1",
                               ', tls = true, tls_ca = "%s", tls_sni = "localhost"' % self.ca_path, backend)
        try:
            answer = yield defer.ensureDeferred(self._fetch(port, tls=False))
            self.assertEqual(answer, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            self.assertIn(b"X-Forwarded-Proto: http\r\n", b"".join(self.seen))
        finally:
            yield defer.ensureDeferred(self._cleanup(pool))

    @defer.inlineCallbacks
    def test_server_tls_verification_failure_is_503_and_logged(self) -> Any:
        """A server certificate from an unknown CA gives 503 and a log line naming the server and the cause."""
        _, other_ca = make_ca("some other CA")
        other = self._write("other-ca.pem", other_ca.public_bytes(serialization.Encoding.PEM))
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        backend = self._backend(tls=True)
        pool, port = self._lbd("tcp:0:interface=127.0.0.1",
                               ', tls = true, tls_ca = "%s", tls_sni = "localhost"' % other, backend)
        try:
            answer = yield defer.ensureDeferred(self._fetch(port, tls=False))
            self.assertTrue(answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), answer)
            self.assertEqual(self.seen, [])
            lines = [formatEvent(e) for e in events if "TLS handshake" in e.get("log_format", "")]
            self.assertEqual(len(lines), 2)     # the first attempt and its one retry
            self.assertTrue(lines[0].startswith("b/s1: TLS handshake with the server failed: "), lines[0])
            self.assertIn("certificate verify failed", lines[0])
            self.assertEqual(pool.backends["b"].econ, 2)
        finally:
            yield defer.ensureDeferred(self._cleanup(pool))

    @defer.inlineCallbacks
    def test_server_tls_without_verification(self) -> Any:
        """tls_verify = false accepts a certificate no CA vouches for."""
        backend = self._backend(tls=True)
        pool, port = self._lbd("tcp:0:interface=127.0.0.1", ", tls = true, tls_verify = false", backend)
        try:
            answer = yield defer.ensureDeferred(self._fetch(port, tls=False))
            self.assertEqual(answer, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        finally:
            yield defer.ensureDeferred(self._cleanup(pool))


def _sleep(seconds: float) -> defer.Deferred[None]:
    d: defer.Deferred[None] = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d
