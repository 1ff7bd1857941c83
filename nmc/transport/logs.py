"""structlog set-up for entry points: JSON lines for daemons, readable lines on a terminal.

Only entry points call this (ARCHITECTURE.md): library code just asks
structlog for a logger and binds context.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

import structlog

__all__ = ["configure_logging", "quiet_tls_eof_warning"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "warning": logging.WARNING,
           "error": logging.ERROR, "fatal": logging.CRITICAL, "critical": logging.CRITICAL}


class _TlsEofNoise(logging.Filter):
    """asyncio warns on every TLS connection nats-py closes; it means nothing to a user."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received() has no effect when using ssl" not in record.getMessage()


def quiet_tls_eof_warning() -> None:
    """Drop asyncio's 'returning true from eof_received() has no effect when using ssl' (idempotent)."""
    logger = logging.getLogger("asyncio")
    if not any(isinstance(f, _TlsEofNoise) for f in logger.filters):
        logger.addFilter(_TlsEofNoise())


def configure_logging(*, json: bool, level: str = "info", stream: TextIO | None = None) -> None:
    """Route structlog to `stream` (stderr by default) as JSON or as coloured console lines.

    Also drops asyncio's TLS-close noise: every process that logs this way talks TLS to NATS.
    """
    quiet_tls_eof_warning()
    out = stream or sys.stderr
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json:
        processors += [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    else:
        # Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org), like the CLI.
        processors.append(structlog.dev.ConsoleRenderer(colors=out.isatty() and not os.environ.get("NO_COLOR")))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level.lower(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
