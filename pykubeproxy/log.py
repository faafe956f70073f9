"""Logging: structlog, JSON lines when stderr is not a terminal, readable console otherwise."""

from __future__ import annotations

import logging
import sys

import structlog


def level_for_verbosity(verbosity: int) -> int:
    """kube-proxy's -v: 0-3 are informational, 4 and above add debug detail."""
    return logging.DEBUG if verbosity >= 4 else logging.INFO


def setup_logging(verbosity: int = 0, *, json_lines: bool | None = None) -> None:
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    # JSON lines carry a traceback as a string field; the console renders its own.
    tail: list[structlog.typing.Processor] = (
        [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
        if json_lines
        else [structlog.dev.ConsoleRenderer(colors=False)]
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *tail,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level_for_verbosity(verbosity)),
        # Looked up at each call: whoever replaced sys.stderr since (a test) gets the lines.
        logger_factory=lambda *_: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
