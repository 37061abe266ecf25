"""`[[intel.feeds]]` settings, credentials from the environment, and the atomic cache store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agent.config import Settings, load_settings
from agent.errors import ConfigError
from agent.intel import feed_store
from agent.intel.feed_store import FeedState
from agent.intel.feeds import feed_credentials, feed_url

TAXII_FEED = """
[intel]
sources = []
state_dir = "{state}"

[[intel.feeds]]
name = "fleet-intel"
url = "https://taxii.example.net/api1/"
kind = "taxii"
collection = "91a7b528-80eb-42ed-a74d-c6fbd5a26116"
interval = 120

[[intel.feeds]]
name = "blocklist"
url = "https://intel.example.net/blocklist.txt"
sha256 = "{pin}"
format = "plain"
"""


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_feeds_from_toml(tmp_path: Path) -> None:
    config = TAXII_FEED.format(state=tmp_path, pin="ab" * 32)
    settings = load_settings(write_config(tmp_path, config))
    taxii, https = settings.intel.feeds
    assert (taxii.kind, taxii.interval, taxii.verify_tls) == ("taxii", 120.0, True)
    assert feed_url(taxii) == (
        "https://taxii.example.net/api1/collections/91a7b528-80eb-42ed-a74d-c6fbd5a26116/"
    )
    assert (https.kind, https.format, https.sha256) == ("https", "plain", "ab" * 32)
    assert settings.intel.state_dir == str(tmp_path)
    assert Settings().intel.state_dir == "/var/lib/rustyflag-agent"
    assert Settings().intel.feeds == []


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ('name = "x"\nurl = "https://h/"\nkind = "taxii"', "needs `collection`"),
        ('name = "x"\nurl = "https://h/"\ncollection = "c"', "are for taxii feeds"),
        ('name = "x"\nurl = "https://h/"\nkind = "taxii"\ncollection = "c"\nsha256 = "' + "a" * 64 + '"',
         "are for https feeds"),
        ('name = "x"\nurl = "ftp://h/"', "url"),
        ('name = "../x"\nurl = "https://h/"', "name"),
        ('name = "x"\nurl = "https://h/"\nsha256 = "XYZ"', "sha256"),
        ('name = "x"\nurl = "https://h/"\ntoken = "secret"', "token"),
        ('name = "x"\nurl = "https://h/"\ninterval = 1', "interval"),
    ],
)  # fmt: skip
def test_invalid_feed_entries_are_config_errors_with_lines(
    tmp_path: Path, entry: str, expected: str
) -> None:
    config = f"[intel]\nsources = []\n\n[[intel.feeds]]\n{entry}\n"
    with pytest.raises(ConfigError) as raised:
        load_settings(write_config(tmp_path, config))
    assert expected in str(raised.value)
    assert str(tmp_path / "agent.toml") in str(raised.value)


def test_duplicate_feed_names(tmp_path: Path) -> None:
    entry = '[[intel.feeds]]\nname = "{}"\nurl = "https://h/"\n'
    config = "[intel]\n" + entry.format("Fleet") + entry.format("fleet")
    with pytest.raises(ConfigError, match="unique"):
        load_settings(write_config(tmp_path, config))


def test_credentials_come_from_the_environment_only() -> None:
    environ = {
        "RUSTYFLAG_FEED_FLEET_INTEL_TOKEN": "t0k",
        "RUSTYFLAG_FEED_BLOCKLIST_USER": "u",
        "RUSTYFLAG_FEED_BLOCKLIST_PASSWORD": "p",
    }
    assert feed_credentials("fleet-intel", environ).token == "t0k"
    blocklist = feed_credentials("blocklist", environ)
    assert (blocklist.token, blocklist.user, blocklist.password) == (None, "u", "p")
    assert feed_credentials("other", environ) == feed_credentials("other", {})


def test_credential_variables_do_not_break_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUSTYFLAG_FEED_FLEET_INTEL_TOKEN", "t0k")
    config = TAXII_FEED.format(state=tmp_path, pin="ab" * 32)
    settings = load_settings(write_config(tmp_path, config))
    assert "t0k" not in json.dumps(settings.model_dump(mode="json"))


def test_store_is_atomic_and_private(tmp_path: Path) -> None:
    target = feed_store.cache_path(tmp_path, "fleet", "stix")
    feed_store.write_atomic(target, b"old")
    staged = feed_store.stage(target, b"new")
    # Staged but not committed (a crash here): readers still see the old copy.
    assert target.read_bytes() == b"old" and staged.read_bytes() == b"new"
    assert staged.parent == target.parent and staged.name.startswith(".")
    feed_store.commit(staged, target)
    assert target.read_bytes() == b"new" and not staged.exists()
    assert os.stat(target).st_mode & 0o077 == 0
    assert os.stat(target.parent).st_mode & 0o027 == 0
    assert [p.name for p in target.parent.iterdir()] == ["fleet.json"]


def test_state_round_trip_and_garbage(tmp_path: Path) -> None:
    state = FeedState(
        url="https://h/", format="stix", etag='"1"', added_after="2026-01-01T00:00:00Z"
    )
    feed_store.write_state(tmp_path, "fleet", state)
    assert feed_store.read_state(tmp_path, "fleet") == state
    assert feed_store.cached_copy(tmp_path, "fleet") is None  # state without its copy
    feed_store.write_atomic(feed_store.cache_path(tmp_path, "fleet", "stix"), b"{}")
    assert feed_store.cached_copy(tmp_path, "fleet") == (
        feed_store.cache_path(tmp_path, "fleet", "stix"),
        "stix",
    )
    feed_store.state_path(tmp_path, "fleet").write_text("{not json")
    assert feed_store.read_state(tmp_path, "fleet") == FeedState()
    feed_store.state_path(tmp_path, "fleet").write_text('{"version": 1, "format": "exe"}')
    assert feed_store.read_state(tmp_path, "fleet").format is None
