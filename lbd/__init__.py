"""lbd: a load balancer daemon on Twisted."""
from __future__ import annotations

__version__ = "0.1.0"
