"""The command line: parse kube-proxy's flags, read the config, run what was asked."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pykubeproxy.app import EXIT_USAGE, Run, run_cleanup, run_dry_run, run_once, run_proxy
from pykubeproxy.backends import SetupError, mode
from pykubeproxy.config import ConfigError
from pykubeproxy.flags import build_parser, ignored_flags, load_config
from pykubeproxy.log import get_logger, setup_logging
from pykubeproxy.sources.files import ManifestError


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.v or 0)
    log = get_logger("pykubeproxy")
    try:
        config, file_ignored = load_config(args)
    except ConfigError as exc:
        log.error("invalid configuration", error=str(exc))
        return EXIT_USAGE
    for flag in ignored_flags(args):
        log.warning("flag accepted for kube-proxy compatibility but ignored", flag=flag)
    for key in file_ignored:
        log.warning("config setting accepted for kube-proxy compatibility but ignored", key=key)
    run = Run(
        from_file=tuple(args.from_file or ()),
        node_ips=tuple(args.node_ip or ()),
        output=args.output,
    )
    try:
        if args.cleanup:
            return run_cleanup()
        mode(config.mode)
        if args.dry_run:
            return run_dry_run(config, run)
        if args.once:
            return run_once(config, run)
        return run_proxy(config, run)
    except ManifestError as exc:
        log.error("cannot read manifests", error=str(exc))
        return EXIT_USAGE
    except SetupError as exc:  # a mode this build does not have
        log.error("cannot start", error=str(exc))
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
