"""HTTPS feeds against a loopback TLS server with a throwaway certificate.

ETag (a 304 means no reload work), the size cap (declared and streamed),
the sha256 pin, bad documents (rejected with file:line of the kept copy),
TLS verification, and the interval.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import FeedSettings, IntelSettings, Settings
from agent.intel import feed_store
from agent.intel.feeds import FAILED_RETRY_SECONDS, FeedManager, FeedStatus
from agent.intel.loading import load_intel
from tests.feeds_servers import Document, free_port, https_server, make_self_signed

PLAIN_V1 = b"# fleet blocklist\n78.135.73.140\n"
PLAIN_V2 = b"# fleet blocklist\n78.135.73.140\n203.0.113.9\n"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def served(certificate: tuple[Path, Path]) -> Iterator[tuple[str, Document]]:
    document = Document(body=PLAIN_V1, etag='"v1"')
    with https_server(*certificate, document) as base:
        yield base, document


def settings_for(url: str, state_dir: Path, ca_file: Path | None, **feed: object) -> Settings:
    options: dict[str, object] = {"interval": 30, "timeout": 5, **feed}
    entry = FeedSettings(
        name="blocklist",
        url=url,
        ca_file=str(ca_file) if ca_file else None,
        **options,  # type: ignore[arg-type]
    )
    return Settings(intel=IntelSettings(sources=[], feeds=[entry], state_dir=str(state_dir)))


def blocks(settings: Settings, address: str) -> bool:
    load = load_intel(settings)
    assert load.snapshot is not None, [str(p) for p in load.result.problems]
    return bool(load.snapshot.match_address(ipaddress.ip_address(address).packed))


def test_etag_304_is_no_reload_work(
    served: tuple[str, Document], certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    base, document = served
    settings = settings_for(f"{base}/blocklist.txt", tmp_path, certificate[0])
    manager = FeedManager(settings)
    [first] = manager.refresh()
    assert first.status is FeedStatus.UPDATED and first.changed, first.problems
    assert first.cache == tmp_path / "feeds" / "blocklist.txt"
    assert first.cache.read_bytes() == PLAIN_V1
    stat_before = os.stat(first.cache)
    state_before = feed_store.read_state(tmp_path, "blocklist")
    assert state_before.etag == '"v1"' and state_before.format == "plain"
    assert blocks(settings, "78.135.73.140")

    [second] = manager.refresh(force=True)
    assert document.requests[-1].get("If-None-Match") == '"v1"'
    assert second.status is FeedStatus.UNCHANGED and not second.changed
    assert second.bytes_fetched == 0 and document.full_responses == 1
    # Not even rewritten: same inode, same mtime, same state.
    stat_after = os.stat(first.cache)
    assert (stat_after.st_ino, stat_after.st_mtime_ns) == (
        stat_before.st_ino,
        stat_before.st_mtime_ns,
    )
    assert feed_store.read_state(tmp_path, "blocklist") == state_before

    document.body, document.etag = PLAIN_V2, '"v2"'
    [third] = manager.refresh(force=True)
    assert third.status is FeedStatus.UPDATED
    assert blocks(settings, "203.0.113.9")


def test_same_bytes_without_etag_are_unchanged(
    served: tuple[str, Document], certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    base, document = served
    document.etag = None
    document.last_modified = "Sat, 28 Nov 2026 08:00:00 GMT"
    manager = FeedManager(settings_for(f"{base}/list", tmp_path, certificate[0]))
    assert manager.refresh()[0].status is FeedStatus.UPDATED
    [again] = manager.refresh(force=True)
    assert document.requests[-1].get("If-Modified-Since") == document.last_modified
    assert again.status is FeedStatus.UNCHANGED and not again.changed


@pytest.mark.parametrize("send_length", [True, False], ids=["content-length", "streamed"])
def test_size_cap_fails_and_keeps_the_last_good_copy(
    served: tuple[str, Document],
    certificate: tuple[Path, Path],
    tmp_path: Path,
    send_length: bool,
) -> None:
    base, document = served
    settings = settings_for(f"{base}/list", tmp_path, certificate[0], max_bytes=4096)
    manager = FeedManager(settings)
    [first] = manager.refresh()
    assert first.status is FeedStatus.UPDATED and first.cache is not None

    big = b"".join(f"10.{i // 256}.{i % 256}.1\n".encode() for i in range(2000))
    assert len(big) > 4096
    document.body, document.etag, document.send_length = big, '"big"', send_length
    [capped] = manager.refresh(force=True)
    assert capped.status is FeedStatus.FAILED and not capped.changed
    assert "max_bytes=4096" in capped.problems[0].message
    assert "'blocklist'" in capped.problems[0].message
    assert first.cache.read_bytes() == PLAIN_V1
    assert blocks(settings, "78.135.73.140") and not blocks(settings, "10.0.5.1")


def test_sha256_pin(
    served: tuple[str, Document], certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    base, _ = served
    good = hashlib.sha256(PLAIN_V1).hexdigest()
    pinned = FeedManager(settings_for(f"{base}/list", tmp_path / "a", certificate[0], sha256=good))
    assert pinned.refresh()[0].status is FeedStatus.UPDATED
    wrong = FeedManager(
        settings_for(f"{base}/list", tmp_path / "b", certificate[0], sha256="0" * 64)
    )
    [outcome] = wrong.refresh()
    assert outcome.status is FeedStatus.REJECTED
    assert "does not match the pin" in outcome.problems[0].message
    assert wrong.cached_sources() == []


def test_bad_document_is_rejected_with_the_line_of_the_kept_copy(
    served: tuple[str, Document], certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    base, document = served
    settings = settings_for(f"{base}/list", tmp_path, certificate[0], format="plain")
    manager = FeedManager(settings)
    [first] = manager.refresh()
    assert first.status is FeedStatus.UPDATED and first.cache is not None

    document.body, document.etag = b"# fleet\n203.0.113.9\n\xff\xfe broken\n", '"v3"'
    [bad] = manager.refresh(force=True)
    assert bad.status is FeedStatus.REJECTED
    [problem] = bad.problems
    rejected = tmp_path / "feeds" / "rejected" / "blocklist.txt"
    assert (problem.source.path, problem.source.line) == (str(rejected), 3)
    assert "not UTF-8" in problem.message
    assert rejected.read_bytes() == document.body
    assert first.cache.read_bytes() == PLAIN_V1
    assert not blocks(settings, "203.0.113.9")
    # A JSON document that is no STIX bundle: rejected too.
    document.body, document.etag = b'{"type": "report"}', '"v4"'
    auto = FeedManager(settings_for(f"{base}/list", tmp_path, certificate[0]))
    assert auto.refresh()[0].status is FeedStatus.REJECTED
    assert first.cache.read_bytes() == PLAIN_V1


def test_tls_is_verified(served: tuple[str, Document], tmp_path: Path) -> None:
    base, document = served
    # System CAs do not know the throwaway certificate.
    [outcome] = FeedManager(settings_for(f"{base}/list", tmp_path, None)).refresh()
    assert outcome.status is FeedStatus.FAILED
    assert "CERTIFICATE_VERIFY_FAILED" in outcome.problems[0].message
    assert document.full_responses == 0
    insecure = settings_for(f"{base}/list", tmp_path, None, verify_tls=False)
    assert FeedManager(insecure).refresh()[0].status is FeedStatus.UPDATED


def test_interval_and_unreachable_server(certificate: tuple[Path, Path], tmp_path: Path) -> None:
    now = [1000.0]
    # A port just freed: nothing listens, the connection is refused at once.
    url = f"https://127.0.0.1:{free_port()}/list"
    settings = settings_for(url, tmp_path, certificate[0])
    manager = FeedManager(settings, clock=lambda: now[0])
    assert manager.due()
    [outcome] = manager.refresh()
    assert outcome.status is FeedStatus.FAILED
    assert "cannot fetch" in outcome.problems[0].message
    assert outcome.problems[0].source.path == url
    assert not manager.due() and manager.next_due() == 1030.0
    assert manager.refresh() == []  # nothing due: nothing fetched
    now[0] = 1030.0
    assert manager.due()
    assert len(manager.refresh()) == 1


def test_bearer_token_from_the_environment(
    served: tuple[str, Document], certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    base, document = served
    settings = settings_for(f"{base}/list", tmp_path, certificate[0])
    FeedManager(settings, environ={"RUSTYFLAG_FEED_BLOCKLIST_TOKEN": "s3cret"}).refresh()
    assert document.requests[-1].get("Authorization") == "Bearer s3cret"
    assert "s3cret" not in feed_store.state_path(tmp_path, "blocklist").read_text()


def test_new_settings_keep_the_schedule_of_unchanged_feeds(
    certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    now = [0.0]
    url = f"https://127.0.0.1:{free_port()}/list"
    manager = FeedManager(settings_for(url, tmp_path, certificate[0]), clock=lambda: now[0])
    manager.refresh()
    same = manager.updated(settings_for(url, tmp_path, certificate[0]))
    assert not same.due() and same.next_due() == 30.0
    changed = manager.updated(settings_for(url, tmp_path, certificate[0], interval=60))
    assert changed.due()  # a changed feed is fetched at once


def test_redirects_stay_on_https(
    served: tuple[str, Document], certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    base, document = served
    document.redirect_to = f"{base}/final"
    followed = FeedManager(settings_for(f"{base}/list", tmp_path / "a", certificate[0]))
    [outcome] = followed.refresh()
    assert outcome.status is FeedStatus.UPDATED
    assert document.full_responses == 1 and len(document.requests) == 2
    document.redirect_to = base.replace("https://", "http://") + "/final"
    downgraded = FeedManager(settings_for(f"{base}/list", tmp_path / "b", certificate[0]))
    [refused] = downgraded.refresh()
    assert refused.status is FeedStatus.FAILED
    assert "refused" in refused.problems[0].message
    assert document.full_responses == 1


def test_a_failed_feed_is_retried_before_its_interval(
    certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    now = [0.0]
    url = f"https://127.0.0.1:{free_port()}/list"
    settings = settings_for(url, tmp_path, certificate[0], interval=3600)
    manager = FeedManager(settings, clock=lambda: now[0])
    assert manager.refresh()[0].status is FeedStatus.FAILED
    assert manager.next_due() == FAILED_RETRY_SECONDS


def test_a_document_that_changes_format_replaces_the_old_copy(
    served: tuple[str, Document], certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    base, document = served
    settings = settings_for(f"{base}/intel", tmp_path, certificate[0])
    manager = FeedManager(settings)
    [plain] = manager.refresh()
    assert plain.cache == tmp_path / "feeds" / "blocklist.txt"
    stix = Path(__file__).parent / "data" / "intel" / "stix-rusty-flag.json"
    document.body, document.etag = stix.read_bytes(), '"stix"'
    [bundle] = manager.refresh(force=True)
    assert bundle.status is FeedStatus.UPDATED
    assert bundle.cache == tmp_path / "feeds" / "blocklist.json"
    assert not plain.cache.exists()
    assert manager.cached_sources() == [bundle.cache]
    load = load_intel(settings)
    assert load.snapshot is not None
    assert [c.name for c in load.snapshot.campaigns] == ["Rusty Flag"]


@pytest.mark.skipif(os.geteuid() != 0, reason="ownership checks need root")
def test_the_cache_passes_the_daemons_ownership_check(
    served: tuple[str, Document], certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    from agent.intel.loading import resolve_sources
    from agent.service.permissions import source_problems

    base, _ = served
    state_dir = tmp_path / "var-lib"
    settings = settings_for(f"{base}/list", state_dir, certificate[0])
    [outcome] = FeedManager(settings).refresh()
    assert outcome.cache is not None
    sources = resolve_sources(settings)
    assert sources == [outcome.cache]
    assert source_problems(None, sources) == []
    # The check is real: a group-writable copy is refused.
    outcome.cache.chmod(0o660)
    os.chown(outcome.cache, 0, 1)
    assert source_problems(None, sources)
