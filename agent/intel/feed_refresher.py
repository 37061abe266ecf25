"""Feed refreshes off the daemon's loop: one background thread, results through a pipe.

A refresh waits on the network (up to `timeout` per feed); the daemon's
select loop must keep draining NFLOG and petting the watchdog meanwhile. The
thread only fetches and writes the cache; it never logs and never touches
the ruleset: the loop selects on `fileno()`, calls `take()`, logs the
outcomes and reloads when one `changed`.
"""

from __future__ import annotations

import contextlib
import os
import threading

from agent.config import Settings
from agent.intel.feeds import FeedManager, FeedOutcome

# Upper bound on one idle wait, so a changed clock or a lost wake-up costs little.
_MAX_IDLE_WAIT = 30.0


class FeedRefresher:
    def __init__(self, manager: FeedManager) -> None:
        self._manager = manager
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._outcomes: list[FeedOutcome] = []
        self._force = False
        self._stopping = False
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name="feed-refresher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def fileno(self) -> int:
        """Readable when outcomes are waiting in `take()`."""
        return self._read_fd

    def request(self, force: bool = True) -> None:
        """Refresh now (SIGHUP): every feed when `force`, else the due ones."""
        with self._lock:
            self._force = self._force or force
            self._wake.notify()

    def update_settings(self, settings: Settings) -> None:
        """Settings after a reload; unchanged feeds keep their schedule (no refetch storm)."""
        with self._lock:
            self._manager = self._manager.updated(settings)
            self._wake.notify()

    def take(self) -> list[FeedOutcome]:
        with contextlib.suppress(BlockingIOError):
            os.read(self._read_fd, 4096)
        with self._lock:
            outcomes, self._outcomes = self._outcomes, []
        return outcomes

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to end and wait up to `timeout` (a fetch in flight ends by its own timeout)."""
        with self._lock:
            self._stopping = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            return  # still in a fetch: leave its pipe open rather than risk a reused fd
        for fd in (self._read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and not self._force and not self._manager.due():
                    next_due = self._manager.next_due()
                    wait = _MAX_IDLE_WAIT
                    if next_due is not None:
                        wait = min(wait, max(0.0, next_due - self._manager.clock()))
                    self._wake.wait(wait)
                if self._stopping:
                    return
                manager, force, self._force = self._manager, self._force, False
            outcomes = manager.refresh(force=force)
            if not outcomes:
                continue
            with self._lock:
                if self._stopping:
                    return
                self._outcomes.extend(outcomes)
                with contextlib.suppress(BlockingIOError, OSError):
                    os.write(self._write_fd, b"\0")
