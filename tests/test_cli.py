"""The command line: check, intel show, config errors with file:line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import load_settings
from agent.errors import ConfigError
from tests.helpers import REPO, SAMPLES

CONFIG = REPO / "configs" / "agent.toml"


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def test_check_embedded_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(CONFIG), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["usable"] is True
    (campaign,) = summary["campaigns"]
    assert campaign["campaign"] == "Rusty Flag"
    assert (campaign["iocs"], campaign["techniques"], campaign["ioas"]) == (1, 3, 2)
    assert campaign["enriched"] is True


def test_check_all_sample_pages(capsys: pytest.CaptureFixture[str]) -> None:
    if not SAMPLES.is_dir():
        pytest.skip("shared samples not present")
    assert (
        main(
            [
                "check",
                "--config",
                str(CONFIG),
                "--no-default-intel",
                "--intel",
                str(SAMPLES),
                "--json",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert len(summary["campaigns"]) == 12  # 12 pages + NOTICE.md (not intel)
    camerashy = next(c for c in summary["campaigns"] if c["campaign"] == "Camerashy")
    assert camerashy["withheld"] == {"ioc": 8, "ttp": 26, "ioa": 527}


def test_check_reports_every_problem_with_location(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        'mode = "enforce"\n[http]\nports = [80, 70000]\n[queue]\nfail_closed = "perhaps"\n'
    )
    bad_enrichment = tmp_path / "intel"
    bad_enrichment.mkdir()
    page = (REPO / "configs" / "campaigns" / "rusty-flag.md").read_text()
    (bad_enrichment / "rusty-flag.md").write_text(page)
    (bad_enrichment / "rusty-flag.enrich.toml").write_text(
        'campaign = "Rusty Flag"\n[techniques]\nsqli = "T9999"\n'
    )
    result = _run(
        "check", "--config", str(config), "--no-default-intel", "--intel", str(bad_enrichment)
    )
    assert result.returncode == 2
    assert f"{config}:3:" in result.stderr  # http.ports
    assert f"{config}:5:" in result.stderr  # queue.fail_closed
    assert "rusty-flag.enrich.toml:3" in result.stderr  # unknown technique
    assert "Traceback" not in result.stderr


def test_missing_intel_source_is_an_error() -> None:
    result = _run("intel", "show", "--config", str(CONFIG), "--intel", "/nonexistent/intel.md")
    assert result.returncode == 2
    assert "/nonexistent/intel.md" in result.stderr
    assert "Traceback" not in result.stderr


def test_intel_show_json_merges_sources(capsys: pytest.CaptureFixture[str]) -> None:
    if not SAMPLES.is_dir():
        pytest.skip("shared samples not present")
    bqtlock = SAMPLES / "actor-bqtlock.md"
    assert main(["intel", "show", "--config", str(CONFIG), "--intel", str(bqtlock), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    names = [c["name"] for c in data["campaigns"]]
    assert sorted(names) == ["BQTlock", "Rusty Flag"]
    rusty = next(c for c in data["campaigns"] if c["name"] == "Rusty Flag")
    assert rusty["iocs"][0]["value"] == "78.135.73.140"
    assert rusty["enrichment"]["routes"] == ["/api/totals/last/{num}", "/api/diffs/last/{num}"]
    assert data["intel_version"]


def test_env_overrides_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUSTYFLAG_MODE", "dry-run")
    monkeypatch.setenv("RUSTYFLAG_HTTP__PORTS", "[80, 8081]")
    settings = load_settings(CONFIG)
    assert settings.dry_run and settings.http.ports == [80, 8081]
    monkeypatch.setenv("RUSTYFLAG_QUEUE__FAIL_CLOSED", "sometimes")
    with pytest.raises(ConfigError) as info:
        load_settings(CONFIG)
    assert "RUSTYFLAG_QUEUE__FAIL_CLOSED" in str(info.value)


def test_invalid_toml_located(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('mode = "enforce"\n[http\n')
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    assert f"{config}:2" in str(info.value)


def test_local_and_allowlisted_iocs_are_never_enforced(tmp_path: Path) -> None:
    from agent.intel.loading import load_intel

    (tmp_path / "lan.txt").write_text(
        "# a real page listed 10.0.0.211 (High) and reverse-DNS names like localhost\n"
        "10.0.0.211\n192.168.15.0/24\n203.0.113.9\nlocalhost\nevil.example\ncdn.shared.example\n"
    )
    config = tmp_path / "agent.toml"
    config.write_text('[intel]\nsources = []\nallow_hostnames = ["shared.example"]\n')
    load = load_intel(load_settings(config), [tmp_path / "lan.txt"])
    assert load.snapshot is not None
    values = sorted(i.value for c in load.snapshot.campaigns for i in c.iocs)
    assert values == ["203.0.113.9", "evil.example"]
    warned = " ".join(str(w) for w in load.warnings)
    assert "10.0.0.211" in warned and "192.168.15.0/24" in warned and "lan.txt:2" in warned
    assert "localhost" in warned and "cdn.shared.example" in warned
    # An operator can narrow the defaults (e.g. a lab whose "attacker" sits in 10/8).
    config.write_text('[intel]\nsources = []\nnever_block = ["127.0.0.0/8"]\n')
    load = load_intel(load_settings(config), [tmp_path / "lan.txt"])
    assert load.snapshot is not None
    assert "10.0.0.211" in {i.value for c in load.snapshot.campaigns for i in c.iocs}
    config.write_text('[intel]\nnever_block = ["10.0.0.0/33"]\n')
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    assert f"{config}:2" in str(info.value)


def test_file_ioa_matching_every_path_is_left_out(tmp_path: Path) -> None:
    from agent.intel.loading import load_intel

    page = (REPO / "configs" / "campaigns" / "rusty-flag.md").read_text()
    page = page.replace("2 | Argument | `num` | Low", "2 | Argument | `num` | Low\n3 | File | `//` | Low")
    (tmp_path / "mykings-like.md").write_text(page)
    config = tmp_path / "agent.toml"
    config.write_text("[intel]\nsources = []\n")
    load = load_intel(load_settings(config), [tmp_path / "mykings-like.md"])
    assert load.snapshot is not None
    (campaign,) = load.snapshot.campaigns
    assert [a.value for a in campaign.ioas] == ["metrics-ui/server/srv.go", "num"]
    assert any("'//' would match nearly every request" in str(w) for w in load.warnings)
