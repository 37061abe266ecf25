"""`rustyflag-agent replay` over the committed Rusty Flag scenario pcap."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main
from tests.helpers import REPO, assert_valid_event
from tests.scenario import EXPECTED, PCAP, build

CONFIG = REPO / "configs" / "agent.toml"


def _replay_json(
    capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    code = main(["replay", str(PCAP), "--config", str(CONFIG), "--json", *extra])
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    *events, summary = lines
    assert summary["event"] == "replay_summary"
    return events, summary


def test_scenario_file_matches_its_generator() -> None:
    # The committed expectations are what the generator produces (no hand-edited results).
    expected = json.loads(EXPECTED.read_text())
    from tests.scenario import expectations_json

    built = json.loads(json.dumps(expectations_json(build())))
    assert built == expected


def test_scenario_decisions(capsys: pytest.CaptureFixture[str]) -> None:
    events, summary = _replay_json(capsys)
    for event in events:
        assert_valid_event(event)
    by_packet = {e["packet"]: e for e in events}
    expectations = json.loads(EXPECTED.read_text())
    expected_frames = set()
    for item in expectations:
        for frame in item["frames"]:
            expected_frames.add(frame)
            assert frame in by_packet, f"{item['label']}: no decision for frame {frame}"
            event = by_packet[frame]
            assert event["action"] == item["action"], item["label"]
            got = {(r["evidence"]["kind"], r["evidence"]["where"]) for r in event["reasons"]}
            assert got == {tuple(x) for x in item["evidence"]}, (item["label"], got)
            techniques = {r["technique"]["id"] for r in event["reasons"] if r["technique"]}
            assert techniques == set(item["techniques"]), (item["label"], techniques)
            assert all(r["campaign"] == "Rusty Flag" for r in event["reasons"])
    # Nothing else is flagged or dropped: the benign flows stay clean.
    extra = [e for e in events if e["packet"] not in expected_frames and e["action"] != "accept"]
    assert not extra, extra
    assert summary["packets"] == len(build().frames)
    assert summary["actions"]["drop"] == 4


def test_dry_run_replay_never_drops(capsys: pytest.CaptureFixture[str]) -> None:
    events, summary = _replay_json(capsys, "--dry-run")
    assert "drop" not in summary["actions"]
    assert summary["actions"]["would_drop"] == 4
    assert all(e["mode"] == "dry-run" for e in events)


def test_replay_cli_errors_are_located(tmp_path: Path) -> None:
    bad = tmp_path / "broken.pcap"
    bad.write_bytes(b"\xd4\xc3\xb2\xa1" + b"\x00" * 10)
    result = subprocess.run(
        [sys.executable, "-m", "agent", "replay", str(bad), "--config", str(CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert str(bad) in result.stderr
    assert "Traceback" not in result.stderr
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "replay",
            str(tmp_path / "nope.pcap"),
            "--config",
            str(CONFIG),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 2 and "no such pcap file" in missing.stderr
