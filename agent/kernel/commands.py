"""Running kernel tools (nft, iptables-nft, ...): the only place this package shells out.

A `CommandRunner` carries an optional argv prefix so the same adapter code runs
inside a network namespace (`["ip", "netns", "exec", NS]`) in tests and labs.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.kernel.errors import KernelError

DEFAULT_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass(frozen=True, slots=True)
class CommandRunner:
    """Runs argv lists, optionally behind a prefix such as `ip netns exec NS`."""

    prefix: tuple[str, ...] = ()
    timeout_s: float = DEFAULT_TIMEOUT_S
    env: tuple[tuple[str, str], ...] = field(default=())

    @classmethod
    def in_netns(cls, namespace: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> CommandRunner:
        return cls(prefix=("ip", "netns", "exec", namespace), timeout_s=timeout_s)

    def run(self, argv: Sequence[str], stdin: str | None = None) -> CommandResult:
        """Run a command; a missing tool or a timeout is a failed result, not an exception."""
        full = (*self.prefix, *argv)
        try:
            done = subprocess.run(
                full,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                check=False,
                env=dict(self.env) if self.env else None,
            )
        except FileNotFoundError as exc:
            return CommandResult(full, 127, "", str(exc))
        except subprocess.TimeoutExpired:
            return CommandResult(full, 124, "", f"timed out after {self.timeout_s} s")
        return CommandResult(full, done.returncode, done.stdout, done.stderr)

    def check(self, argv: Sequence[str], stdin: str | None = None) -> CommandResult:
        """Run a command and raise `KernelError` with its stderr if it fails."""
        result = self.run(argv, stdin)
        if not result.ok:
            raise KernelError(f"{' '.join(argv[:3])} failed (rc={result.returncode})",
                              result.stderr.strip())
        return result


# The runner for the host's own namespace (the service's default).
HOST_RUNNER = CommandRunner()
