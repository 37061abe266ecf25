"""The background refresher: outcomes arrive through a selectable fd; SIGHUP-style requests;
fetch timeouts bound how long a dead server can hold a refresh."""

from __future__ import annotations

import select
import time
from pathlib import Path

import pytest

from agent.config import FeedSettings, IntelSettings, Settings
from agent.intel.feed_refresher import FeedRefresher
from agent.intel.feeds import FeedManager, FeedOutcome, FeedStatus
from tests.feeds_servers import Document, https_server, make_self_signed, silent_server


def settings_for(url: str, state_dir: Path, ca_file: Path, **feed: object) -> Settings:
    options: dict[str, object] = {"interval": 30, "timeout": 5, **feed}
    entry = FeedSettings(name="blocklist", url=url, ca_file=str(ca_file), **options)  # type: ignore[arg-type]
    return Settings(intel=IntelSettings(sources=[], feeds=[entry], state_dir=str(state_dir)))


def wait_outcomes(refresher: FeedRefresher, timeout: float = 10.0) -> list[FeedOutcome]:
    readable, _, _ = select.select([refresher.fileno()], [], [], timeout)
    assert readable, "no outcome in time"
    return refresher.take()


def test_refresher_delivers_outcomes_and_honours_requests(tmp_path: Path) -> None:
    cert, key = make_self_signed(tmp_path)
    document = Document(body=b"78.135.73.140\n", etag='"a"')
    now = [0.0]
    with https_server(cert, key, document) as base:
        manager = FeedManager(settings_for(f"{base}/l", tmp_path, cert), clock=lambda: now[0])
        refresher = FeedRefresher(manager)
        refresher.start()
        try:
            [first] = wait_outcomes(refresher)  # due at start
            assert first.status is FeedStatus.UPDATED
            # Not due (the clock stands still): a non-forced request fetches nothing.
            refresher.request(force=False)
            assert select.select([refresher.fileno()], [], [], 0.5)[0] == []
            refresher.request(force=True)  # SIGHUP
            [second] = wait_outcomes(refresher)
            assert second.status is FeedStatus.UNCHANGED and not second.changed
            now[0] = 31.0  # the interval elapsed
            refresher.request(force=False)
            document.body, document.etag = b"78.135.73.140\n203.0.113.5\n", '"b"'
            [third] = wait_outcomes(refresher)
            assert third.changed
            assert refresher.take() == []
        finally:
            started = time.monotonic()
            refresher.stop()
            assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("kind", ["https", "taxii"])
def test_a_server_that_never_answers_fails_within_the_timeout(tmp_path: Path, kind: str) -> None:
    cert, _ = make_self_signed(tmp_path)
    with silent_server() as address:
        if kind == "https":
            settings = settings_for(f"https://{address}/l", tmp_path, cert, timeout=1.0)
        else:
            entry = FeedSettings(
                name="fleet", url=f"http://{address}/api1/", kind="taxii", collection="c1",
                timeout=1.0,
            )  # fmt: skip
            settings = Settings(
                intel=IntelSettings(sources=[], feeds=[entry], state_dir=str(tmp_path))
            )
        started = time.monotonic()
        [outcome] = FeedManager(settings).refresh()
        elapsed = time.monotonic() - started
    assert outcome.status is FeedStatus.FAILED
    assert 0.9 <= elapsed < 5.0, elapsed
    assert "time" in outcome.problems[0].message.lower()
