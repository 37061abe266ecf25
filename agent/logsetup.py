"""structlog, configured once: JSON lines to stdout (journald) or a readable console on a TTY."""

from __future__ import annotations

import sys
import time
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

from agent.events import iso_timestamp

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def _timestamp_if_absent(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # Decision events carry the packet's own time; everything else gets "now".
    event_dict.setdefault("timestamp", iso_timestamp(time.time()))
    return event_dict


def configure_logging(
    *,
    level: str = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
    stream: TextIO | None = None,
) -> None:
    out = stream if stream is not None else sys.stdout
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if use_console
        else structlog.processors.JSONRenderer(ensure_ascii=False, sort_keys=False)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            _timestamp_if_absent,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, 20)),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def get_logger(**bound: Any) -> Any:
    return structlog.get_logger(**bound)
