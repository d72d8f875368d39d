"""Choosing a backend for a request: ``[[frontends.X.routes]]``, first match wins.

Routes are compiled once per frontend configuration; matching works on bytes.
Backends are named, not held, so a reload that replaces a backend object is
seen at the next request.
"""
from __future__ import annotations

import re
from typing import Sequence

from lbd.config import RouteConfig


def split_target(target: bytes) -> bytes:
    """The path of a request target, without the query (``/`` for ``*`` or authority form)."""
    if target[:1] != b"/":
        scheme = target.find(b"://")
        if scheme < 0:
            return b"/" if target != b"*" else b"*"
        slash = target.find(b"/", scheme + 3)
        if slash < 0:
            return b"/"
        target = target[slash:]
    q = target.find(b"?")
    return target if q < 0 else target[:q]


def normalise_host(host: bytes | None) -> bytes | None:
    """Lower case, without the port; ``[v6]:port`` keeps its brackets."""
    if not host:
        return None
    host = host.lower()
    if host[:1] == b"[":
        end = host.find(b"]")
        return host[: end + 1] if end > 0 else host
    colon = host.rfind(b":")
    if colon >= 0:
        host = host[:colon]
    if host.endswith(b"."):
        host = host[:-1]
    return host


class Route:
    """A compiled route: every condition given must hold."""

    __slots__ = ("backend", "host", "host_suffix", "prefix", "regex", "methods", "headers")

    def __init__(self, cfg: RouteConfig) -> None:
        self.backend = cfg.backend
        self.host: bytes | None = None
        self.host_suffix = False
        if cfg.host is not None:
            h = cfg.host.lower().encode("idna" if not cfg.host.isascii() else "ascii")
            if h.startswith(b"*."):
                self.host = h[1:]          # ".example.com"
                self.host_suffix = True
            else:
                self.host = h
        self.prefix = cfg.path_prefix.encode("utf-8") if cfg.path_prefix is not None else None
        self.regex: re.Pattern[bytes] | None = cfg.path_regex
        self.methods = frozenset(cfg.methods)
        self.headers = cfg.headers

    def matches(self, method: bytes, host: bytes | None, path: bytes,
                headers: Sequence[tuple[bytes, bytes]]) -> bool:
        if self.methods and method not in self.methods:
            return False
        want = self.host
        if want is not None:
            if host is None:
                return False
            if self.host_suffix:
                if not host.endswith(want) or len(host) == len(want):
                    return False
            elif host != want:
                return False
        if self.prefix is not None and not path.startswith(self.prefix):
            return False
        if self.regex is not None and self.regex.search(path) is None:
            return False
        for name, value in self.headers:
            for n, v in headers:
                if len(n) == len(name) and n.lower() == name and v.strip() == value:
                    break
            else:
                return False
        return True


class Router:
    """The compiled routes of one frontend configuration."""

    __slots__ = ("routes", "source")

    def __init__(self, routes: Sequence[RouteConfig]) -> None:
        self.source = routes
        self.routes = tuple(Route(r) for r in routes)

    def backend_name(self, method: bytes, host: bytes | None, target: bytes,
                     headers: Sequence[tuple[bytes, bytes]]) -> str | None:
        """The backend of the first matching route, or None."""
        if not self.routes:
            return None
        path = split_target(target)
        h = normalise_host(host)
        for r in self.routes:
            if r.matches(method, h, path, headers):
                return r.backend
        return None
