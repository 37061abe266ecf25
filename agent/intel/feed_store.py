"""The on-disk cache of feeds: last good copies and their fetch state.

Layout under `state_dir/feeds/`: `<name>.<ext>` (the last good document, ext
from its format), `<name>.state.json` (ETag, Last-Modified, TAXII
`added_after`, url, format, sha256), `rejected/<name>.<ext>` (the last copy
that failed validation, kept so `file:line` in the error points somewhere).
Every write is atomic: temp file in the same directory, fsync, rename,
fsync of the directory; a crash leaves the old copy or the new, never half.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, cast

from agent.config import Settings
from agent.intel.model import LoadProblem, SourceRef

Format = Literal["vuldb", "stix", "plain"]
_EXTENSIONS: dict[Format, str] = {"vuldb": ".md", "stix": ".json", "plain": ".txt"}
STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class FeedState:
    """What the last successful fetch left behind (all optional: a fresh feed has none)."""

    url: str = ""
    format: Format | None = None
    etag: str | None = None
    last_modified: str | None = None
    # TAXII: the newest X-TAXII-Date-Added-Last seen; the next fetch asks for later ones.
    added_after: str | None = None
    sha256: str | None = None
    fetched_at: str | None = None
    # The source holds nothing (a TAXII collection with no live object): no copy, no warning.
    # A file cannot say this: stix2 refuses a bundle without objects.
    empty: bool = False


def feeds_dir(state_dir: Path) -> Path:
    return state_dir / "feeds"


def cache_path(state_dir: Path, name: str, fmt: Format) -> Path:
    return feeds_dir(state_dir) / f"{name}{_EXTENSIONS[fmt]}"


def state_path(state_dir: Path, name: str) -> Path:
    return feeds_dir(state_dir) / f"{name}.state.json"


def rejected_path(state_dir: Path, name: str, fmt: Format) -> Path:
    return feeds_dir(state_dir) / "rejected" / f"{name}{_EXTENSIONS[fmt]}"


def ensure_dir(path: Path) -> None:
    # 0750: the cache steers the firewall; the loader refuses group/other-writable sources.
    path.mkdir(mode=0o750, parents=True, exist_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def stage(target: Path, data: bytes) -> Path:
    """Write `data` to a fsynced temp file beside `target` (same filesystem, so rename is atomic)."""
    ensure_dir(target.parent)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise
    return Path(name)


def commit(staged: Path, target: Path) -> None:
    """Atomically replace `target` by a staged file."""
    ensure_dir(target.parent)
    os.replace(staged, target)
    _fsync_dir(target.parent)


def discard(staged: Path) -> None:
    with contextlib.suppress(OSError):
        staged.unlink()


def write_atomic(target: Path, data: bytes) -> None:
    commit(stage(target, data), target)


def read_state(state_dir: Path, name: str) -> FeedState:
    """The stored state, or an empty one when missing or unreadable (then we refetch in full)."""
    try:
        raw = json.loads(state_path(state_dir, name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return FeedState()
    if not isinstance(raw, dict) or raw.get("version") != STATE_VERSION:
        return FeedState()
    fields = {}
    for key in FeedState.__dataclass_fields__:
        value = raw.get(key)
        if isinstance(value, str):
            fields[key] = value
    fmt = fields.get("format")
    if fmt is not None and fmt not in _EXTENSIONS:
        fields.pop("format")
    return FeedState(
        url=fields.get("url", ""),
        format=cast(Format | None, fields.get("format")),
        etag=fields.get("etag"),
        last_modified=fields.get("last_modified"),
        added_after=fields.get("added_after"),
        sha256=fields.get("sha256"),
        fetched_at=fields.get("fetched_at"),
        empty=raw.get("empty") is True,
    )


def write_state(state_dir: Path, name: str, state: FeedState) -> None:
    payload = {"version": STATE_VERSION, **asdict(state)}
    write_atomic(state_path(state_dir, name), json.dumps(payload, indent=2).encode("utf-8"))


def cached_copy(state_dir: Path, name: str) -> tuple[Path, Format] | None:
    """The last good copy of a feed and its format, if one was ever stored."""
    state = read_state(state_dir, name)
    if state.format is None:
        return None
    path = cache_path(state_dir, name, state.format)
    return (path, state.format) if path.is_file() else None


def cached_feed_sources(
    settings: Settings,
) -> tuple[dict[Path, Format], tuple[LoadProblem, ...]]:
    """Last good copies of the configured feeds (path -> format) and a warning per feed without one."""
    state_dir = Path(settings.intel.state_dir)
    sources: dict[Path, Format] = {}
    missing: list[LoadProblem] = []
    for feed in settings.intel.feeds:
        copy = cached_copy(state_dir, feed.name)
        if copy is None and read_state(state_dir, feed.name).empty:
            continue
        if copy is None:
            missing.append(
                LoadProblem(
                    SourceRef(feed.url),
                    f"feed {feed.name!r} has no good copy yet (never fetched successfully)",
                    fatal=False,
                )
            )
        else:
            sources[copy[0]] = copy[1]
    return sources, tuple(missing)
