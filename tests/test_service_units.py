"""Service pieces without the lab: sd_notify datagrams, file permissions, the log sink."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import LogSettings, load_settings
from agent.errors import AgentError
from agent.logsetup import configure_logging, get_logger
from agent.service.logfile import LogSink
from agent.service.permissions import path_problems, source_problems
from agent.service.sdnotify import Notifier, watchdog_interval
from agent.service.worker import ReloadMessage, picklable_settings

REPO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "agent.toml"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(2.0)
    yield sock, path
    sock.close()


def _fields(sock: socket.socket) -> dict[str, str]:
    return dict(line.split("=", 1) for line in sock.recv(4096).decode().splitlines())


def test_notifier_speaks_the_reload_protocol(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    notifier = Notifier(path)
    assert notifier.ready("1 campaigns")
    assert _fields(sock) == {"READY": "1", "STATUS": "1 campaigns"}
    assert notifier.reloading()
    reloading = _fields(sock)
    assert reloading["RELOADING"] == "1"
    # MONOTONIC_USEC is CLOCK_MONOTONIC in microseconds (systemd checks it is recent).
    now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert abs(int(reloading["MONOTONIC_USEC"]) - now_usec) < 5_000_000
    assert notifier.watchdog() and _fields(sock) == {"WATCHDOG": "1"}
    assert notifier.stopping() and _fields(sock)["STOPPING"] == "1"


def test_notifier_without_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled and not notifier.ready("x")


def test_notifier_abstract_socket_address() -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"rf-test-notify-{os.getpid()}"
    sock.bind("\0" + name)
    sock.settimeout(2.0)
    try:
        assert Notifier("@" + name).ready("abstract")
        assert _fields(sock)["READY"] == "1"
    finally:
        sock.close()


def test_watchdog_interval_is_half_and_only_for_this_pid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert watchdog_interval() is None


def test_reload_message_pickles_settings_bound_to_a_file(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('mode = "dry-run"\n[http]\nports = [81]\n')
    settings = load_settings(config)
    with pytest.raises((pickle.PicklingError, AttributeError)):
        pickle.dumps(settings)  # why picklable_settings exists
    copy = pickle.loads(pickle.dumps(picklable_settings(settings)))
    assert copy.model_dump() == settings.model_dump() and copy.dry_run
    message = ReloadMessage(picklable_settings(settings), (tmp_path,), True, "v")
    assert pickle.loads(pickle.dumps(message)) == message


# -- permissions ------------------------------------------------------------------------


def test_root_owned_file_is_accepted(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("files in tmp_path are owned by the test user")
    page = tmp_path / "campaign.md"
    page.write_text("x")
    page.chmod(0o644)
    assert path_problems(page, what="intel") == []


def test_world_writable_file_is_refused(tmp_path: Path) -> None:
    page = tmp_path / "campaign.md"
    page.write_text("x")
    page.chmod(0o666)
    problems = path_problems(page, what="intel")
    assert problems and "steers the firewall" in str(problems[0])
    assert "writable by all users" in str(problems[0]) or "not root" in str(problems[0])


@needs_root
def test_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("")
    config.chmod(0o600)
    os.chown(config, 1234, 0)
    problems = path_problems(config, what="config")
    assert len(problems) == 1 and "owned by uid 1234" in str(problems[0])


@needs_root
def test_group_writable_by_non_root_group_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("")
    config.chmod(0o664)
    os.chown(config, 0, 0)
    assert path_problems(config, what="config") == []
    os.chown(config, 0, 4321)
    assert "writable by group 4321" in str(path_problems(config, what="config")[0])


@needs_root
def test_writable_parent_directory_is_refused_but_sticky_is_accepted(tmp_path: Path) -> None:
    parent = tmp_path / "feeds"
    parent.mkdir()
    page = parent / "campaign.md"
    page.write_text("x")
    page.chmod(0o644)
    parent.chmod(0o777)
    problems = path_problems(page, what="intel")
    assert problems and f"directory {parent}" in str(problems[0])
    parent.chmod(0o1777)  # like /tmp: others cannot replace our file
    assert path_problems(page, what="intel") == []
    # ...but as a source directory they could still add pages to it.
    assert source_problems(None, [parent])


@needs_root
def test_source_directory_checks_every_file(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    for name in ("a.md", "b.md"):
        (tmp_path / name).write_text("x")
        (tmp_path / name).chmod(0o644)
    assert source_problems(None, [tmp_path]) == []
    (tmp_path / "b.md").chmod(0o646)
    problems = source_problems(None, [tmp_path])
    assert [p.path for p in problems] == [str(tmp_path / "b.md")]


def test_missing_file_is_left_to_the_loader(tmp_path: Path) -> None:
    assert path_problems(tmp_path / "absent.md", what="intel") == []


# -- log sink ---------------------------------------------------------------------------


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    configure_logging(fmt="json")


@pytest.mark.usefixtures("restore_logging")
def test_log_file_is_reopened_after_rotation(tmp_path: Path) -> None:
    log_path = tmp_path / "agent.log"
    sink = LogSink()
    sink.apply(LogSettings(output=str(log_path), format="json"))
    get_logger().info("before")
    log_path.rename(tmp_path / "agent.log.1")  # logrotate moves it away
    get_logger().info("still_old")
    sink.reopen()
    get_logger().info("after")
    assert [e["event"] for e in _lines(tmp_path / "agent.log.1")] == ["before", "still_old"]
    assert [e["event"] for e in _lines(log_path)] == ["after"]
    assert not log_path.stat().st_mode & 0o027  # not readable by others, writable by owner only


def test_unwritable_log_output_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AgentError) as caught:
        LogSink().apply(LogSettings(output=str(tmp_path / "missing" / "agent.log")))
    assert "cannot open log.output" in str(caught.value.problems[0])


def test_reloaded_intel_is_acyclic_so_freezing_leaks_nothing() -> None:
    """worker.freeze_long_lived(full=False) relies on it: a swapped-out snapshot and
    detector are freed by reference counting, with no cycles left for the GC."""
    import gc

    from agent.intel.loading import load_intel
    from agent.intel.snapshot import build_snapshot
    from agent.wiring import build_core, build_detector

    settings = load_settings(REPO_CONFIG)
    first = load_intel(settings).snapshot
    assert first is not None
    core = build_core(settings, first)
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(3):
            snapshot = build_snapshot(first.campaigns)
            core.swap_detector(build_detector(settings, snapshot))
            del snapshot
        assert gc.collect() == 0
    finally:
        if was_enabled:
            gc.enable()


@needs_root
def test_check_refuses_what_run_would_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.cli import main

    tmp_path.chmod(0o755)
    intel = tmp_path / "intel"
    intel.mkdir(mode=0o755)
    shutil.copy(REPO_CONFIG.parent / "campaigns" / "rusty-flag.md", intel)
    config = tmp_path / "agent.toml"
    config.write_text(f"[intel]\nsources = [{json.dumps(str(intel))}]\n")
    config.chmod(0o644)
    assert main(["check", "--config", str(config)]) == 0
    (intel / "rusty-flag.md").chmod(0o666)
    assert main(["check", "--config", str(config)]) != 0
    assert "rusty-flag.md: refusing intel file: writable by all users" in capsys.readouterr().err


def test_loading_any_sample_source_leaves_no_cyclic_garbage() -> None:
    """worker.freeze_long_lived(full=False) freezes without collecting after a reload."""
    import gc

    from agent.intel.loading import load_intel
    from agent.intel.snapshot import paused_gc

    settings = load_settings(REPO_CONFIG)
    data = Path(__file__).resolve().parent / "data" / "intel"
    sources = [REPO_CONFIG.parent / "campaigns", *sorted(data.glob("*"))]
    assert len(sources) > 5
    for source in sources:
        load_intel(settings, [source], include_configured=False)  # imports, caches
        gc.collect()
        with paused_gc():
            load = load_intel(settings, [source], include_configured=False)
        assert gc.collect() == 0, source
        del load
