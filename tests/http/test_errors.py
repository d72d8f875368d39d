"""lbd's own error pages: built-in, from errorfiles, and the shipped etc/errors files."""
from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from lbd.config import normalise_errorfile
from lbd.http.errors import builtin_page, render

ETC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "etc", "errors")


class RenderTests(SynchronousTestCase):
    def test_builtin_page(self) -> None:
        """The built-in 503 is a short HTML page with an exact Content-Length."""
        self.assertEqual(
            render(503, {}, close=False),
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 107\r\nCache-Control: no-cache\r\n"
            b"Content-Type: text/html\r\n\r\n<html><body><h1>503 Service Unavailable</h1>\n"
            b"No server is available to handle this request.\n</body></html>\n")

    def test_close_adds_connection_close(self) -> None:
        """A page for a connection that will close says Connection: close."""
        page = render(400, {}, close=True)
        self.assertIn(b"\r\nConnection: close\r\n\r\n", page)

    def test_http10_keep_alive(self) -> None:
        """A page for an HTTP/1.0 keep-alive client says Connection: keep-alive."""
        self.assertIn(b"\r\nConnection: keep-alive\r\n\r\n", render(503, {}, close=False, keep_alive_10=True))

    def test_head_only(self) -> None:
        """For a HEAD request the page has its head and no body."""
        page = render(502, {}, close=False, head_only=True)
        self.assertTrue(page.endswith(b"Content-Type: text/html\r\n\r\n"))

    def test_errorfile_connection_header_is_replaced(self) -> None:
        """A Connection header inside an errorfile gives way to the one the connection needs."""
        raw = normalise_errorfile(b"HTTP/1.1 503 Busy\nConnection: keep-alive\nX-Why: maint\n\nsorry\n")
        self.assertEqual(render(503, {503: raw}, close=True),
                         b"HTTP/1.1 503 Busy\r\nX-Why: maint\r\nContent-Length: 6\r\nConnection: close\r\n\r\nsorry\n")

    def test_unknown_status_still_renders(self) -> None:
        """A status without a reason phrase of its own gets a generic page, still well framed."""
        page = render(599, {}, close=True)
        head, body = page.split(b"\r\n\r\n", 1)
        self.assertTrue(head.startswith(b"HTTP/1.1 599 Error\r\n"))
        self.assertIn(b"Content-Length: %d" % len(body), head)


class ShippedFilesTests(SynchronousTestCase):
    def test_shipped_errorfiles_match_the_builtin_pages(self) -> None:
        """etc/errors/*.http are valid errorfiles equal to what lbd sends without them."""
        names = sorted(os.listdir(ETC))
        self.assertEqual(names, ["400.http", "403.http", "408.http", "500.http", "502.http", "503.http", "504.http"])
        for name in names:
            status = int(name.split(".")[0])
            with open(os.path.join(ETC, name), "rb") as f:
                data = f.read()
            self.assertEqual(normalise_errorfile(data, name), normalise_errorfile(builtin_page(status)))
            self.assertTrue(data.startswith(b"HTTP/1.1 %d " % status))
