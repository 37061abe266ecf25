"""Where the service's JSON lines go: stdout (journald) or a file reopened on SIGUSR1.

logrotate moves the file away and sends SIGUSR1; every process (main and
each worker) then opens the path again, so no event goes to the rotated file
for longer than one loop turn.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from agent.config import LogSettings
from agent.errors import AgentError, Problem
from agent.logsetup import configure_logging

STDOUT = "stdout"
LOG_FILE_MODE = 0o640


class LogSink:
    """The current log stream of this process; `apply` (re)configures structlog."""

    def __init__(self) -> None:
        self._stream: TextIO | None = None
        self.settings: LogSettings | None = None

    def apply(self, settings: LogSettings) -> None:
        """Open `settings.output` (again) and log there; raises AgentError if it cannot."""
        stream = self._open(settings.output)
        configure_logging(level=settings.level, fmt=settings.format, stream=stream)
        self._close_file()
        self._stream = stream
        self.settings = settings

    def reopen(self) -> None:
        if self.settings is not None and self.settings.output != STDOUT:
            self.apply(self.settings)

    @staticmethod
    def _open(output: str) -> TextIO:
        if output == STDOUT:
            return sys.stdout
        try:
            fd = os.open(output, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                         LOG_FILE_MODE)
        except OSError as exc:
            raise AgentError(
                [Problem(output, 0, f"cannot open log.output: {exc.strerror}")]
            ) from exc
        return os.fdopen(fd, "a", encoding="utf-8")

    def _close_file(self) -> None:
        if self._stream is not None and self._stream is not sys.stdout:
            self._stream.close()
        self._stream = None
