"""structlog, configured once: JSON lines to stdout (journald) or a readable console on a TTY."""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

from agent.events import iso_timestamp

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
# JSON leaves NEL, LINE and PARAGRAPH SEPARATOR unescaped, but line readers
# (str.splitlines) split on them: a logged value must not break its line.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _timestamp_if_absent(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # Decision events carry the packet's own time; everything else gets "now".
    event_dict.setdefault("timestamp", iso_timestamp(time.time()))
    return event_dict


class LineWriter:
    """A structlog logger writing each event as ONE write(2) of a whole line.

    Worker processes share the output; whole-line writes keep their events
    from interleaving (atomic for pipes up to PIPE_BUF, and for O_APPEND files).
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        try:
            self._fd: int | None = stream.fileno()
        except (OSError, ValueError, AttributeError):
            self._fd = None

    def msg(self, message: str) -> None:
        if not message.isascii():
            message = message.translate(_LINE_BREAKS)
        data = (message + "\n").encode("utf-8", "backslashreplace")
        if self._fd is None:
            self._stream.write(data.decode("utf-8"))
            self._stream.flush()
            return
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._fd, view)
            except BlockingIOError:
                continue
            except OSError:
                return  # a log sink that went away must not stop enforcement
            view = view[written:]

    log = debug = info = warning = warn = error = critical = exception = failure = fatal = msg


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
        logger_factory=lambda *_args: LineWriter(out),
        cache_logger_on_first_use=False,
    )


def get_logger(**bound: Any) -> Any:
    return structlog.get_logger(**bound)
