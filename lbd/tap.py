"""twistd's entry: ``twistd -n lbd -c /etc/lbd.toml``.

The only module that imports the global reactor; everything below gets it
passed in.
"""
from __future__ import annotations

import sys
from typing import Any

from twisted.python import usage

from lbd import __version__
from lbd import config as _config
from lbd.logsetup import Logger

_log = Logger()


class Options(usage.Options):
    synopsis = "[-c FILE]"
    longdesc = "Run the lbd load balancer with a TOML configuration file."
    optParameters = [
        ["config", "c", _config.DEFAULT_PATH, "The configuration file."],
    ]

    def opt_version(self) -> None:
        """Print the version and exit."""
        sys.stdout.write("lbd %s\n" % (__version__,))
        sys.exit(0)


def makeService(options: Options) -> Any:
    from twisted.internet import reactor

    from lbd.logsetup import setup_logging
    from lbd.service import LBService

    try:
        cfg = _config.load(options["config"])
    except _config.ConfigError as e:
        # twistd prints the exception text; make it the list of problems.
        raise SystemExit("lbd: invalid configuration:\n" + "\n".join(e.errors))
    setup_logging(cfg.log)
    from lbd import fastpath
    if fastpath.enabled(cfg):
        if fastpath.install(reactor):
            _log.info("fastpath on: direct dispatch and immediate writes (global.fastpath, LBD_FASTPATH)")
        else:
            _log.info("fastpath unavailable on {reactor}: running on stock Twisted paths",
                      reactor=type(reactor).__name__)
    return LBService(cfg, reactor)
