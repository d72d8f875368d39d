"""twistd plugin for lbd; imports nothing of lbd while twistd scans plugins."""
from twisted.application.service import ServiceMaker

lbd = ServiceMaker(
    "lbd",
    "lbd.tap",
    "A load balancer daemon (TCP and HTTP) for pools of web and database servers",
    "lbd",
)
