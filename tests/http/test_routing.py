"""Routes: host (exact, wildcard, port ignored, any case), path prefix, path regex, method, header; first match wins."""
from __future__ import annotations

import re

from twisted.trial.unittest import SynchronousTestCase

from lbd.config import RouteConfig
from lbd.http.routing import Router, normalise_host, split_target
from tests.http.harness import Harness, response

# (route, method, host, target, headers, matches)
MATCH_TABLE: list[tuple[RouteConfig, bytes, bytes | None, bytes, list[tuple[bytes, bytes]], bool]] = [
    (RouteConfig("x", host="api.example.com"), b"GET", b"api.example.com", b"/", [], True),
    (RouteConfig("x", host="api.example.com"), b"GET", b"API.Example.COM", b"/", [], True),
    (RouteConfig("x", host="api.example.com"), b"GET", b"api.example.com:8080", b"/", [], True),
    (RouteConfig("x", host="api.example.com"), b"GET", b"api.example.com.", b"/", [], True),
    (RouteConfig("x", host="api.example.com"), b"GET", b"www.example.com", b"/", [], False),
    (RouteConfig("x", host="api.example.com"), b"GET", None, b"/", [], False),
    (RouteConfig("x", host="*.example.com"), b"GET", b"a.example.com", b"/", [], True),
    (RouteConfig("x", host="*.example.com"), b"GET", b"a.b.example.com:443", b"/", [], True),
    (RouteConfig("x", host="*.example.com"), b"GET", b"example.com", b"/", [], False),
    (RouteConfig("x", host="*.example.com"), b"GET", b"badexample.com", b"/", [], False),
    (RouteConfig("x", path_prefix="/api/"), b"GET", b"h", b"/api/v1?q=1", [], True),
    (RouteConfig("x", path_prefix="/api/"), b"GET", b"h", b"/api", [], False),
    (RouteConfig("x", path_prefix="/api/"), b"GET", b"h", b"/?/api/", [], False),
    (RouteConfig("x", path_prefix="/api/"), b"GET", b"h", b"http://h/api/x", [], True),
    (RouteConfig("x", path_regex=re.compile(rb"\.(png|jpg)$")), b"GET", b"h", b"/i/a.png?v=2", [], True),
    (RouteConfig("x", path_regex=re.compile(rb"\.(png|jpg)$")), b"GET", b"h", b"/i/a.png.html", [], False),
    (RouteConfig("x", methods=(b"GET", b"HEAD")), b"HEAD", b"h", b"/", [], True),
    (RouteConfig("x", methods=(b"GET", b"HEAD")), b"POST", b"h", b"/", [], False),
    (RouteConfig("x", headers=((b"x-canary", b"1"),)), b"GET", b"h", b"/", [(b"X-Canary", b"1")], True),
    (RouteConfig("x", headers=((b"x-canary", b"1"),)), b"GET", b"h", b"/", [(b"X-Canary", b"0")], False),
    (RouteConfig("x", headers=((b"x-canary", b"1"),)), b"GET", b"h", b"/", [], False),
    (RouteConfig("x", host="h", path_prefix="/a"), b"GET", b"h", b"/b", [], False),
    (RouteConfig("x", host="h", path_prefix="/a"), b"GET", b"h", b"/a", [], True),
]


class RouteMatchTests(SynchronousTestCase):
    def test_match_table(self) -> None:
        """Each condition alone and combined matches exactly as the table says."""
        for route, method, host, target, headers, expected in MATCH_TABLE:
            got = Router([route]).backend_name(method, host, target, headers)
            self.assertEqual(got == "x", expected, (route, method, host, target, headers))

    def test_first_match_wins(self) -> None:
        """With several matching routes the first one in the file is used."""
        router = Router([RouteConfig("first", path_prefix="/"), RouteConfig("second", path_prefix="/a")])
        self.assertEqual(router.backend_name(b"GET", b"h", b"/a", []), "first")

    def test_no_match_is_none(self) -> None:
        """Without a matching route the router has no answer (the default backend applies)."""
        router = Router([RouteConfig("x", path_prefix="/a")])
        self.assertIsNone(router.backend_name(b"GET", b"h", b"/b", []))

    def test_split_target(self) -> None:
        """Paths come from origin and absolute form, without the query."""
        self.assertEqual(split_target(b"/a/b?c"), b"/a/b")
        self.assertEqual(split_target(b"http://h:1/x?y"), b"/x")
        self.assertEqual(split_target(b"http://h"), b"/")
        self.assertEqual(split_target(b"*"), b"*")

    def test_normalise_host(self) -> None:
        """Hosts are lower-cased and lose their port; IPv6 literals keep their brackets."""
        self.assertEqual(normalise_host(b"Ex.COM:80"), b"ex.com")
        self.assertEqual(normalise_host(b"[::1]:8080"), b"[::1]")
        self.assertIsNone(normalise_host(b""))


class RelayRoutingTests(SynchronousTestCase):
    def test_requests_go_to_the_routed_backend(self) -> None:
        """A matching route sends the request to its backend; others go to default_backend."""
        h = Harness(servers='s1 = { address = "127.0.0.1:9001" }',
                    frontend='[[frontends.f.routes]]\nbackend = "api"\nhost = "api.example.com"\npath_prefix = "/v1/"',
                    more='[backends.api.servers]\na1 = { address = "127.0.0.1:9101" }')
        session, client = h.client()
        session.dataReceived(b"GET /v1/x HTTP/1.1\r\nHost: API.example.com:80\r\n\r\n")
        self.assertEqual(h.connects(), [("127.0.0.1", 9101)])
        proto, _ = h.accept()
        proto.dataReceived(response(b"api"))
        session.dataReceived(b"GET /v2/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
        self.assertEqual(h.connects(), [("127.0.0.1", 9101), ("127.0.0.1", 9001)])
        self.assertEqual(h.pool.backends["api"].req_tot, 1)
        self.assertEqual(h.backend.req_tot, 1)

    def test_unmatched_without_default_gets_503(self) -> None:
        """No matching route and no default_backend: 503."""
        h = Harness(default_backend="",
                    frontend='[[frontends.f.routes]]\nbackend = "b"\nmethod = "POST"')
        session, client = h.client()
        session.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertTrue(client.value().startswith(b"HTTP/1.1 503 Service Unavailable\r\n"))
        self.assertEqual(h.connects(), [])
