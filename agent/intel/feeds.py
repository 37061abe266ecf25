"""Remote intel sources (issue 7): HTTPS documents and TAXII 2.1 collections.

The network edge of `agent.intel`. `FeedManager.refresh()` fetches each due
feed, validates what arrived with the same loader as local files
(`sources.load_source`), and only then replaces the feed's last good copy
(atomically, see `feed_store`). A failing or invalid feed keeps that copy;
`load_intel` reads the copies (`cached_feed_sources`), so a gateway that
boots without network enforces what it had. Nothing here raises on bad
input or a bad network: every outcome is a `FeedOutcome`.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import requests

from agent.config import FeedSettings, Settings
from agent.intel import feed_store
from agent.intel.feed_http import Fetched, FetchFailure, fetch_document, tls_context
from agent.intel.feed_store import FeedState, Format, cached_feed_sources
from agent.intel.feed_taxii import (
    bundle_objects,
    bundle_text,
    collection_url,
    fetch_collection,
    merge_objects,
)
from agent.intel.model import LoadProblem, SourceRef
from agent.intel.sources import detect_format, load_source

# After a network failure the next try comes within this, whatever the interval.
FAILED_RETRY_SECONDS = 60.0


class FeedStatus(StrEnum):
    UPDATED = "updated"  # a new good copy is stored: reload
    UNCHANGED = "unchanged"  # 304, same bytes, or nothing new in the collection
    FAILED = "failed"  # network/protocol/auth error: the last good copy stays
    REJECTED = "rejected"  # fetched but invalid: the last good copy stays


@dataclass(frozen=True, slots=True)
class FeedOutcome:
    name: str
    url: str
    status: FeedStatus
    # Fatal problems for FAILED/REJECTED; warnings of a stored copy otherwise.
    problems: tuple[LoadProblem, ...] = ()
    bytes_fetched: int = 0
    # TAXII: objects that changed the cached bundle.
    objects_changed: int = 0
    cache: Path | None = None
    duration_ms: float = 0.0

    @property
    def changed(self) -> bool:
        """Whether the daemon has reload work (only a newly stored copy)."""
        return self.status is FeedStatus.UPDATED

    @property
    def ok(self) -> bool:
        return self.status in (FeedStatus.UPDATED, FeedStatus.UNCHANGED)

    def log_fields(self) -> dict[str, Any]:
        """Flat fields for one structured log line per outcome."""
        return {
            "feed": self.name,
            "url": self.url,
            "status": self.status.value,
            "changed": self.changed,
            "bytes": self.bytes_fetched,
            "objects_changed": self.objects_changed,
            "cache": str(self.cache) if self.cache else None,
            "duration_ms": self.duration_ms,
            "problems": [str(p) for p in self.problems],
        }


def credential_env_prefix(name: str) -> str:
    return f"RUSTYFLAG_FEED_{name.upper().replace('-', '_')}_"


@dataclass(frozen=True, slots=True)
class Credentials:
    token: str | None = None
    user: str | None = None
    password: str | None = None


def feed_credentials(name: str, environ: Mapping[str, str]) -> Credentials:
    """`..._TOKEN` (bearer) or `..._USER` + `..._PASSWORD` (basic), from the environment only."""
    prefix = credential_env_prefix(name)
    return Credentials(
        environ.get(prefix + "TOKEN") or None,
        environ.get(prefix + "USER") or None,
        environ.get(prefix + "PASSWORD") or None,
    )


class _BearerAuth(requests.auth.AuthBase):
    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


def feed_url(feed: FeedSettings) -> str:
    """What is fetched: the document, or the collection URL of a TAXII feed."""
    if feed.kind == "taxii" and feed.collection:
        return collection_url(feed.url, feed.collection, feed.api_root)
    return feed.url


def _relocated(problem: LoadProblem, old: Path, new: Path, prefix: str) -> LoadProblem:
    path = str(new) if problem.source.path == str(old) else problem.source.path
    return LoadProblem(
        SourceRef(path, problem.source.line), prefix + problem.message, problem.fatal
    )


def _now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FeedManager:
    """Fetches configured feeds on their intervals; owns `state_dir/feeds/`.

    Not thread-safe: one caller (the daemon's loop or one background thread).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.feeds = tuple(settings.intel.feeds)
        self.state_dir = Path(settings.intel.state_dir)
        self.environ = environ if environ is not None else os.environ
        self.clock = clock
        self._next_due = dict.fromkeys((f.name for f in self.feeds), 0.0)
        self._settings = settings

    def updated(self, settings: Settings) -> FeedManager:
        """A manager for new settings (after a reload); unchanged feeds keep their schedule."""
        successor = FeedManager(settings, environ=self.environ, clock=self.clock)
        old = {f.name: f for f in self.feeds}
        for feed in successor.feeds:
            if old.get(feed.name) == feed:
                successor._next_due[feed.name] = self._next_due[feed.name]
        return successor

    def due(self, now: float | None = None) -> bool:
        """Whether any feed's interval has elapsed (all are due right after start)."""
        moment = self.clock() if now is None else now
        return any(moment >= when for when in self._next_due.values())

    def next_due(self) -> float | None:
        """Clock time of the next due feed (None without feeds): a select timeout for the daemon."""
        return min(self._next_due.values(), default=None)

    def cached_sources(self) -> list[Path]:
        return list(cached_feed_sources(self._settings)[0])

    def refresh(self, force: bool = False) -> list[FeedOutcome]:
        """Fetch every due feed (every feed when `force`); one outcome per fetched feed."""
        outcomes: list[FeedOutcome] = []
        for feed in self.feeds:
            now = self.clock()
            if not force and now < self._next_due[feed.name]:
                continue
            started = time.monotonic()
            outcome = (
                self._refresh_taxii(feed) if feed.kind == "taxii" else self._refresh_https(feed)
            )
            duration = round((time.monotonic() - started) * 1000, 1)
            outcomes.append(dataclasses.replace(outcome, duration_ms=duration))
            # A gateway that booted before its network comes back sooner than a full interval.
            wait = feed.interval
            if outcome.status is FeedStatus.FAILED:
                wait = min(wait, FAILED_RETRY_SECONDS)
            self._next_due[feed.name] = self.clock() + wait
        return outcomes

    # -- one feed -------------------------------------------------------------------------

    def _failed(self, feed: FeedSettings, message: str, nbytes: int = 0) -> FeedOutcome:
        url = feed_url(feed)
        problem = LoadProblem(SourceRef(url), f"feed {feed.name!r}: {message}; last good copy kept")
        return FeedOutcome(feed.name, url, FeedStatus.FAILED, (problem,), nbytes)

    def _store(
        self,
        feed: FeedSettings,
        data: bytes,
        fmt: Format,
        state: FeedState,
        *,
        old_format: Format | None,
        objects_changed: int = 0,
    ) -> FeedOutcome:
        """Validate `data` with the file loader; store it and its state only if it loads."""
        url = feed_url(feed)
        target = feed_store.cache_path(self.state_dir, feed.name, fmt)
        try:
            staged = feed_store.stage(target, data)
        except OSError as exc:
            return self._failed(feed, f"cannot write under {self.state_dir}: {exc}", len(data))
        prefix = f"feed {feed.name!r} ({url}): "
        result = load_source(staged, fmt)
        if not result.ok:
            rejected = feed_store.rejected_path(self.state_dir, feed.name, fmt)
            try:
                feed_store.commit(staged, rejected)
            except OSError:
                feed_store.discard(staged)
                rejected = staged
            problems = tuple(
                _relocated(p, staged, rejected, prefix + "rejected, last good copy kept: ")
                for p in result.problems
                if p.fatal
            )
            return FeedOutcome(
                feed.name, url, FeedStatus.REJECTED, problems, len(data), objects_changed
            )
        try:
            feed_store.commit(staged, target)
            # State before cleanup: a crash in between leaves a stray file, never a lost copy.
            feed_store.write_state(self.state_dir, feed.name, state)
        except OSError as exc:
            feed_store.discard(staged)
            return self._failed(feed, f"cannot store the copy: {exc}", len(data))
        if old_format is not None and old_format != fmt:
            feed_store.discard(feed_store.cache_path(self.state_dir, feed.name, old_format))
        warnings = tuple(_relocated(p, staged, target, prefix) for p in result.problems)
        return FeedOutcome(
            feed.name, url, FeedStatus.UPDATED, warnings, len(data), objects_changed, target
        )

    def _store_empty(
        self, feed: FeedSettings, state: FeedState, *, old_format: Format | None, changed: int
    ) -> FeedOutcome:
        """Nothing live in the collection (all revoked, or new): drop the copy, remember why."""
        try:
            if old_format is not None:
                feed_store.discard(feed_store.cache_path(self.state_dir, feed.name, old_format))
            feed_store.write_state(
                self.state_dir, feed.name, dataclasses.replace(state, format=None, empty=True)
            )
        except OSError as exc:
            return self._failed(feed, f"cannot store state: {exc}")
        return FeedOutcome(feed.name, feed_url(feed), FeedStatus.UPDATED, objects_changed=changed)

    def _refresh_https(self, feed: FeedSettings) -> FeedOutcome:
        url = feed.url
        state = feed_store.read_state(self.state_dir, feed.name)
        cached = feed_store.cached_copy(self.state_dir, feed.name)
        # Conditional headers only when there is a copy the 304 would refer to.
        conditional = cached is not None and state.url == url
        creds = feed_credentials(feed.name, self.environ)
        headers: dict[str, str] = {}
        if creds.token:
            headers["Authorization"] = f"Bearer {creds.token}"
        elif creds.user and creds.password:
            pair = base64.b64encode(f"{creds.user}:{creds.password}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {pair}"
        try:
            context = tls_context(feed.verify_tls, feed.ca_file)
        except (OSError, ValueError) as exc:
            return self._failed(feed, f"TLS setup ({feed.ca_file}): {exc}")
        fetched = fetch_document(
            url,
            timeout=feed.timeout,
            max_bytes=feed.max_bytes,
            context=context,
            etag=state.etag if conditional else None,
            last_modified=state.last_modified if conditional else None,
            headers=headers,
        )
        if isinstance(fetched, FetchFailure):
            return self._failed(feed, fetched.message)
        if not isinstance(fetched, Fetched):
            return FeedOutcome(
                feed.name, url, FeedStatus.UNCHANGED, cache=cached[0] if cached else None
            )
        digest = hashlib.sha256(fetched.body).hexdigest()
        if feed.sha256 is not None and digest != feed.sha256:
            problem = LoadProblem(
                SourceRef(url),
                f"feed {feed.name!r}: sha256 {digest} does not match the pin {feed.sha256}; "
                "rejected, last good copy kept",
            )
            return FeedOutcome(feed.name, url, FeedStatus.REJECTED, (problem,), len(fetched.body))
        text = fetched.body.decode("utf-8-sig", errors="replace")
        fmt: Format = feed.format or detect_format(text)
        new_state = FeedState(
            url=url,
            format=fmt,
            etag=fetched.etag,
            last_modified=fetched.last_modified,
            sha256=digest,
            fetched_at=_now_text(),
        )
        if cached is not None and state.sha256 == digest and state.format == fmt:
            # Same bytes (server without ETag): remember the validators, no reload work.
            try:
                feed_store.write_state(self.state_dir, feed.name, new_state)
            except OSError as exc:
                return self._failed(feed, f"cannot store state: {exc}", len(fetched.body))
            return FeedOutcome(
                feed.name, url, FeedStatus.UNCHANGED, (), len(fetched.body), cache=cached[0]
            )
        return self._store(feed, fetched.body, fmt, new_state, old_format=state.format)

    def _refresh_taxii(self, feed: FeedSettings) -> FeedOutcome:
        url = feed_url(feed)
        state = feed_store.read_state(self.state_dir, feed.name)
        cached = feed_store.cached_copy(self.state_dir, feed.name)
        cached_objects: list[Mapping[str, Any]] | None = None
        # A copy of another collection (the url changed) is no base to merge into.
        if cached is not None and state.url == url:
            try:
                cached_objects = bundle_objects(cached[0].read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError):
                cached_objects = None
        elif state.empty and state.url == url:
            cached_objects = []
        # Without a usable base, ask for everything.
        added_after = state.added_after if cached_objects is not None else None
        creds = feed_credentials(feed.name, self.environ)
        auth: requests.auth.AuthBase | tuple[str, str] | None = None
        if creds.token:
            auth = _BearerAuth(creds.token)
        elif creds.user and creds.password:
            auth = (creds.user, creds.password)
        verify: bool | str = (feed.ca_file or True) if feed.verify_tls else False
        try:
            fetched = fetch_collection(
                url,
                added_after=added_after,
                timeout=feed.timeout,
                max_bytes=feed.max_bytes,
                page_size=feed.page_size,
                verify=verify,
                auth=auth,
            )
        except Exception as exc:  # requests, taxii2-client and JSON errors: all mean "failed"
            return self._failed(feed, f"TAXII fetch: {type(exc).__name__}: {exc}")
        merged, changed = merge_objects(cached_objects or (), fetched.objects)
        new_state = FeedState(
            url=url,
            format="stix",
            added_after=fetched.added_after,
            fetched_at=_now_text(),
        )
        if changed == 0 and cached_objects is not None:
            if fetched.added_after != state.added_after:
                try:
                    feed_store.write_state(self.state_dir, feed.name, new_state)
                except OSError as exc:
                    return self._failed(feed, f"cannot store state: {exc}", fetched.bytes_read)
            return FeedOutcome(
                feed.name,
                url,
                FeedStatus.UNCHANGED,
                (),
                fetched.bytes_read,
                0,
                cached[0] if cached else None,
            )
        if not merged:
            return self._store_empty(feed, new_state, old_format=state.format, changed=changed)
        data = bundle_text(feed.name, merged).encode("utf-8")
        outcome = self._store(
            feed, data, "stix", new_state, old_format=state.format, objects_changed=changed
        )
        return dataclasses.replace(outcome, bytes_fetched=fetched.bytes_read)
