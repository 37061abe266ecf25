"""TAXII 2.1 feeds against medallion (the OASIS reference server) on loopback.

First load, incremental update with added_after, server down, a bad bundle,
and an agent restart with the server down: the cache is what gets enforced.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import FeedSettings, IntelSettings, Settings
from agent.intel import feed_store
from agent.intel.feeds import FeedManager, FeedStatus
from agent.intel.loading import load_intel
from agent.intel.snapshot import IntelSnapshot
from tests.feeds_servers import (
    COLLECTION_ID,
    OTHER_COLLECTION_ID,
    READER,
    MedallionServer,
    campaign_objects,
    indicator,
    make_self_signed,
    medallion,
)
from tests.helpers import REPO

RUSTY_FLAG_STIX = REPO / "tests" / "data" / "intel" / "stix-rusty-flag.json"
READER_ENV = {"RUSTYFLAG_FEED_FLEET_USER": READER[0], "RUSTYFLAG_FEED_FLEET_PASSWORD": READER[1]}


def feed_settings(server: MedallionServer, state_dir: Path, **feed: object) -> Settings:
    entry = FeedSettings(
        name="fleet",
        url=server.api_root,
        kind="taxii",
        interval=60,
        timeout=5,
        page_size=3,  # several pages for a dozen objects: paging is exercised
        **{"collection": COLLECTION_ID, **feed},  # type: ignore[arg-type]
    )
    return Settings(intel=IntelSettings(sources=[], feeds=[entry], state_dir=str(state_dir)))


def enforced(settings: Settings) -> IntelSnapshot:
    load = load_intel(settings)
    assert load.snapshot is not None, [str(p) for p in load.result.problems]
    return load.snapshot


def blocks(snapshot: IntelSnapshot, address: str) -> bool:
    return bool(snapshot.match_address(ipaddress.ip_address(address).packed))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MedallionServer]:
    with medallion(tmp_path / "medallion") as running:
        running.add(campaign_objects(RUSTY_FLAG_STIX))
        yield running


def test_first_load_stores_one_bundle_and_load_intel_enforces_it(
    server: MedallionServer, tmp_path: Path
) -> None:
    settings = feed_settings(server, tmp_path / "state")
    manager = FeedManager(settings, environ=READER_ENV)
    assert manager.due(0.0)
    [outcome] = manager.refresh()
    assert outcome.status is FeedStatus.UPDATED, outcome.problems
    assert outcome.changed
    assert outcome.objects_changed == len(campaign_objects(RUSTY_FLAG_STIX))
    assert outcome.cache == tmp_path / "state" / "feeds" / "fleet.json"
    assert manager.cached_sources() == [outcome.cache]
    bundle = json.loads(outcome.cache.read_text())
    assert bundle["type"] == "bundle"
    assert len(bundle["objects"]) == len(campaign_objects(RUSTY_FLAG_STIX))
    state = feed_store.read_state(tmp_path / "state", "fleet")
    assert state.added_after is not None and state.url == server.collection_url
    # Nothing is due again before the interval.
    assert not manager.due()
    snapshot = enforced(settings)
    assert [c.name for c in snapshot.campaigns] == ["Rusty Flag"]
    assert blocks(snapshot, "78.135.73.140")
    assert not blocks(snapshot, "192.0.2.1")


def test_wrong_credentials_fail_and_store_nothing(server: MedallionServer, tmp_path: Path) -> None:
    settings = feed_settings(server, tmp_path / "state")
    manager = FeedManager(settings, environ={"RUSTYFLAG_FEED_FLEET_USER": "reader",
                                             "RUSTYFLAG_FEED_FLEET_PASSWORD": "wrong"})  # fmt: skip
    [outcome] = manager.refresh()
    assert outcome.status is FeedStatus.FAILED
    assert "401" in outcome.problems[0].message
    assert manager.cached_sources() == []
    load = load_intel(settings)
    assert load.snapshot is None  # nothing else configured: no intel at all
    assert any("no good copy yet" in p.message for p in load.warnings)


def test_incremental_update_fetches_only_new_objects(
    server: MedallionServer, tmp_path: Path
) -> None:
    settings = feed_settings(server, tmp_path / "state")
    manager = FeedManager(settings, environ=READER_ENV)
    [first] = manager.refresh()
    assert first.status is FeedStatus.UPDATED

    [idle] = manager.refresh(force=True)
    assert idle.status is FeedStatus.UNCHANGED and not idle.changed
    assert idle.objects_changed == 0

    new_ioc = indicator("203.0.113.77")
    server.add([new_ioc])
    [update] = manager.refresh(force=True)
    assert update.status is FeedStatus.UPDATED, update.problems
    assert update.objects_changed == 1  # added_after: the old objects were not sent again
    assert update.bytes_fetched < first.bytes_fetched / 3
    objects = json.loads(update.cache.read_text())["objects"]  # type: ignore[union-attr]
    assert len(objects) == len(campaign_objects(RUSTY_FLAG_STIX)) + 1
    snapshot = enforced(settings)
    assert blocks(snapshot, "203.0.113.77") and blocks(snapshot, "78.135.73.140")

    # A newer version of the same indicator replaces it (newest `modified` wins).
    moved = dict(new_ioc, modified="2026-02-01T00:00:00.000Z",
                 pattern="[ipv4-addr:value = '203.0.113.78']")  # fmt: skip
    server.add([moved])
    [replaced] = manager.refresh(force=True)
    assert replaced.status is FeedStatus.UPDATED and replaced.objects_changed == 1
    snapshot = enforced(settings)
    assert blocks(snapshot, "203.0.113.78") and not blocks(snapshot, "203.0.113.77")

    # Revoking it removes it.
    server.add([dict(moved, modified="2026-03-01T00:00:00.000Z", revoked=True)])
    [revoked] = manager.refresh(force=True)
    assert revoked.status is FeedStatus.UPDATED
    assert not blocks(enforced(settings), "203.0.113.78")


def test_server_down_keeps_last_good_copy(server: MedallionServer, tmp_path: Path) -> None:
    settings = feed_settings(server, tmp_path / "state")
    manager = FeedManager(settings, environ=READER_ENV)
    [first] = manager.refresh()
    assert first.cache is not None
    before = first.cache.read_bytes()
    server.stop()

    [down] = manager.refresh(force=True)
    assert down.status is FeedStatus.FAILED and not down.changed
    [problem] = down.problems
    assert "'fleet'" in problem.message and "last good copy kept" in problem.message
    assert problem.source.path == server.collection_url
    assert first.cache.read_bytes() == before
    assert blocks(enforced(settings), "78.135.73.140")


def test_bad_bundle_is_rejected_whole_and_the_old_copy_kept(
    server: MedallionServer, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    settings = feed_settings(server, state_dir)
    manager = FeedManager(settings, environ=READER_ENV)
    [first] = manager.refresh()
    assert first.cache is not None
    before = first.cache.read_bytes()
    state_before = feed_store.read_state(state_dir, "fleet")

    # One good new IOC and one indicator without its required pattern: STIX rejects the bundle.
    broken = indicator("203.0.113.99")
    del broken["pattern"]
    server.add([indicator("203.0.113.98"), broken])
    [bad] = manager.refresh(force=True)
    assert bad.status is FeedStatus.REJECTED and not bad.changed
    assert bad.problems and all(p.fatal for p in bad.problems)
    rejected = state_dir / "feeds" / "rejected" / "fleet.json"
    assert bad.problems[0].source.path == str(rejected)
    assert "invalid STIX 2.1 bundle" in bad.problems[0].message
    assert "'fleet'" in bad.problems[0].message and server.collection_url in bad.problems[0].message
    assert rejected.is_file()
    # Whole: the good IOC of the same update is not taken either; the state does not advance.
    assert first.cache.read_bytes() == before
    assert feed_store.read_state(state_dir, "fleet") == state_before
    snapshot = enforced(settings)
    assert blocks(snapshot, "78.135.73.140") and not blocks(snapshot, "203.0.113.98")
    # Still rejected next time (the bad object is still new to us), never half-applied.
    [again] = manager.refresh(force=True)
    assert again.status is FeedStatus.REJECTED


def test_restart_with_server_down_enforces_the_cache(
    server: MedallionServer, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    settings = feed_settings(server, state_dir)
    [first] = FeedManager(settings, environ=READER_ENV).refresh()
    assert first.status is FeedStatus.UPDATED
    version = enforced(settings).intel_version
    server.stop()

    # "Reboot": fresh settings and manager, no server. The agent loads before fetching.
    rebooted = feed_settings(server, state_dir)
    snapshot = enforced(rebooted)
    assert snapshot.intel_version == version
    assert blocks(snapshot, "78.135.73.140")
    [down] = FeedManager(rebooted, environ=READER_ENV).refresh()
    assert down.status is FeedStatus.FAILED
    assert enforced(rebooted).intel_version == version


def test_a_different_collection_url_starts_from_scratch(
    server: MedallionServer, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    [first] = FeedManager(feed_settings(server, state_dir), environ=READER_ENV).refresh()
    assert first.status is FeedStatus.UPDATED
    other_ioc = indicator("198.18.0.5")
    server.add([other_ioc], collection_id=OTHER_COLLECTION_ID)
    # Same feed name, another collection: neither its added_after nor its objects carry over.
    moved = feed_settings(server, state_dir, collection=server.url_of(OTHER_COLLECTION_ID))
    [outcome] = FeedManager(moved, environ=READER_ENV).refresh()
    assert outcome.status is FeedStatus.UPDATED, outcome.problems
    assert outcome.cache is not None
    objects = json.loads(outcome.cache.read_text())["objects"]
    assert [o["id"] for o in objects] == [other_ioc["id"]]
    snapshot = enforced(moved)
    assert blocks(snapshot, "198.18.0.5") and not blocks(snapshot, "78.135.73.140")


def test_empty_collection_contributes_nothing_and_is_then_unchanged(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    with medallion(tmp_path / "medallion") as empty:
        settings = feed_settings(empty, state_dir)
        manager = FeedManager(settings, environ=READER_ENV)
        [first] = manager.refresh()
        # stix2 refuses a bundle without objects: an empty feed has no copy, and says so.
        assert first.status is FeedStatus.UPDATED and first.cache is None, first.problems
        assert feed_store.read_state(state_dir, "fleet").empty
        load = load_intel(settings)
        assert not any("no good copy" in p.message for p in load.result.problems)
        [second] = manager.refresh(force=True)
        assert second.status is FeedStatus.UNCHANGED and not second.changed

        ioc = indicator("198.18.1.1")
        empty.add([ioc])
        [added] = manager.refresh(force=True)
        assert added.status is FeedStatus.UPDATED and added.cache is not None
        assert blocks(enforced(settings), "198.18.1.1")
        assert not feed_store.read_state(state_dir, "fleet").empty

        # Revoking the last object empties the feed: nothing of it is enforced any more.
        empty.add([dict(ioc, modified="2026-05-01T00:00:00.000Z", revoked=True)])
        [revoked] = manager.refresh(force=True)
        assert revoked.status is FeedStatus.UPDATED and revoked.cache is None
        assert manager.cached_sources() == []
        assert not added.cache.exists()

        # A corrupt cache is no base: everything is fetched again and the copy rebuilt.
        empty.add([indicator("198.18.2.2")])
        [again] = manager.refresh(force=True)
        assert again.cache is not None
        again.cache.write_text("garbage")
        [rebuilt] = manager.refresh(force=True)
        assert rebuilt.status is FeedStatus.UPDATED
        assert blocks(enforced(settings), "198.18.2.2")


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_taxii_over_tls_with_a_pinned_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A system bundle in the environment must not replace the feed's ca_file.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    cert, key = make_self_signed(tmp_path)
    with medallion(tmp_path / "medallion", tls=(cert, key)) as secure:
        secure.add(campaign_objects(RUSTY_FLAG_STIX))
        untrusted = feed_settings(secure, tmp_path / "a")
        [refused] = FeedManager(untrusted, environ=READER_ENV).refresh()
        assert refused.status is FeedStatus.FAILED
        assert "CERTIFICATE_VERIFY_FAILED" in refused.problems[0].message
        trusted = feed_settings(secure, tmp_path / "b", ca_file=str(cert))
        [loaded] = FeedManager(trusted, environ=READER_ENV).refresh()
        assert loaded.status is FeedStatus.UPDATED, loaded.problems
        assert blocks(enforced(trusted), "78.135.73.140")
        unverified = feed_settings(secure, tmp_path / "c", verify_tls=False)
        [lab] = FeedManager(unverified, environ=READER_ENV).refresh()
        assert lab.status is FeedStatus.UPDATED, lab.problems
