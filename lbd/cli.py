"""Command lines: ``lbd check|version`` and ``lbctl``. The only module that prints."""
from __future__ import annotations

import argparse
import sys

from lbd import __version__
from lbd import config as _config


def lbd_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lbd",
        description="lbd load balancer tools. Run the daemon with: twistd -n lbd -c FILE",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = sub.add_parser("check", help="validate a configuration file without binding anything")
    check.add_argument("-c", "--config", default=_config.DEFAULT_PATH, help="the file (default %(default)s)")
    sub.add_parser("version", help="print the version")
    args = parser.parse_args(argv)
    if args.command == "version":
        print("lbd %s" % (__version__,))
        return 0
    if args.command == "check":
        try:
            _config.load(args.config)
        except _config.ConfigError as e:
            for line in e.errors:
                print(line, file=sys.stderr)
            return 1
        print("Configuration file is valid")
        return 0
    parser.print_help(sys.stderr)
    return 2


def lbctl_main(argv: list[str] | None = None) -> int:
    from lbd.admin.client import main

    return main(argv)


def run_lbd() -> None:
    sys.exit(lbd_main())


def run_lbctl() -> None:
    sys.exit(lbctl_main())


if __name__ == "__main__":  # pragma: no cover
    run_lbd()
