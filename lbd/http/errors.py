"""The responses lbd writes itself: configured errorfiles or short built-in pages.

Errorfiles arrive from config.py already normalised (CRLF head, a
Content-Length matching the body). Any ``Connection``/``Keep-Alive`` header
in them is replaced by the one the connection needs, and a HEAD request gets
the head alone, so the page never breaks the client's framing.
"""
from __future__ import annotations

from typing import Mapping

REASONS = {
    400: b"Bad Request",
    403: b"Forbidden",
    408: b"Request Timeout",
    413: b"Payload Too Large",
    414: b"URI Too Long",
    421: b"Misdirected Request",
    425: b"Too Early",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}

_MESSAGES = {
    400: b"Your browser sent an invalid request.",
    403: b"Request forbidden by administrative rules.",
    408: b"Your browser didn't send a complete request in time.",
    413: b"The request body is larger than this server accepts.",
    414: b"The request line is too long.",
    421: b"The request was sent to a server that cannot answer it.",
    425: b"The request was sent too early.",
    429: b"You have sent too many requests in a given amount of time.",
    431: b"The request headers are too large.",
    500: b"An internal server error occurred.",
    501: b"The request method is not supported.",
    502: b"The server returned an invalid or incomplete response.",
    503: b"No server is available to handle this request.",
    504: b"The server didn't respond in time.",
    505: b"The HTTP version is not supported.",
}


def builtin_page(status: int) -> bytes:
    """The built-in page for ``status``, as a complete raw response (no Connection header)."""
    reason = REASONS.get(status, b"Error")
    message = _MESSAGES.get(status, b"An error occurred.")
    body = b"<html><body><h1>%d %s</h1>\n%s\n</body></html>\n" % (status, reason, message)
    return (b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\nCache-Control: no-cache\r\n"
            b"Content-Type: text/html\r\n\r\n%s" % (status, reason, len(body), body))


_BUILTIN = {status: builtin_page(status) for status in REASONS}

_CONN_HEADERS = (b"connection", b"keep-alive", b"proxy-connection")


def render(status: int, pages: Mapping[int, bytes], close: bool, keep_alive_10: bool = False,
           head_only: bool = False) -> bytes:
    """The bytes to send for ``status``.

    ``pages`` are the configured errorfiles (status to raw response); without
    one the built-in page is used. ``close`` adds ``Connection: close``;
    ``keep_alive_10`` adds ``Connection: keep-alive`` (an HTTP/1.0 client
    that asked for it); ``head_only`` drops the body (a HEAD request).
    """
    raw = pages.get(status)
    if raw is None:
        raw = _BUILTIN.get(status)
        if raw is None:
            raw = builtin_page(status)
    sep = raw.find(b"\r\n\r\n")
    head, body = raw[:sep], raw[sep + 4:]
    lines = head.split(b"\r\n")
    out = [lines[0]]
    for line in lines[1:]:
        name = line.split(b":", 1)[0].strip().lower()
        if name not in _CONN_HEADERS:
            out.append(line)
    if close:
        out.append(b"Connection: close")
    elif keep_alive_10:
        out.append(b"Connection: keep-alive")
    out.append(b"")
    out.append(b"" if head_only else body)
    return b"\r\n".join(out)
