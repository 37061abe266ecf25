"""Errors the agent reports to operators: always `file:line: what is wrong`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One located problem in an operator-supplied file."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.message}"


class AgentError(Exception):
    """An error meant for the operator; carries one or more located problems."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class ConfigError(AgentError):
    """The configuration file or environment is not usable."""


class IntelError(AgentError):
    """An intel source is not usable."""
