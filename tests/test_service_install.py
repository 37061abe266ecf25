"""`make install` / `make uninstall` into a temp dir, and the unit checked offline.

Root only (install chowns to root). Nothing touches /opt, /etc or a running
systemd: PREFIX, CONFDIR and UNITDIR point into tmp_path, SYSTEMCTL=true.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.lab.netns import REPO_ROOT

UNIT = "rustyflag-agent.service"
MAX_EXPOSURE = 3.0

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="make install needs root"),
    pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze"),
]


@dataclass(frozen=True, slots=True)
class Installed:
    root: Path
    prefix: Path
    confdir: Path
    unitdir: Path

    def make(self, target: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["make", "-s", "-C", str(REPO_ROOT), target, f"PREFIX={self.prefix}",
             f"CONFDIR={self.confdir}", f"UNITDIR={self.unitdir}", "SYSTEMCTL=true"],
            capture_output=True, text=True, timeout=600, check=False,
        )

    @property
    def unit(self) -> Path:
        return self.unitdir / UNIT


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    root = tmp_path_factory.mktemp("install")
    inst = Installed(root, root / "opt" / "rustyflag-agent", root / "etc" / "rustyflag-agent",
                     root / "units")
    done = inst.make("install")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    yield inst
    inst.make("uninstall")


def _systemd_version() -> int:
    out = subprocess.run(["systemd-analyze", "--version"], capture_output=True, text=True,
                         check=True).stdout
    return int(out.split()[1])


def test_layout_and_installed_agent_checks_its_config(installed: Installed) -> None:
    agent = installed.prefix / "venv" / "bin" / "rustyflag-agent"
    assert agent.is_file()
    config = installed.confdir / "agent.toml"
    assert (installed.confdir / "campaigns" / "rusty-flag.md").is_file()
    assert f'sources = ["{installed.confdir}/campaigns"]' in config.read_text()
    for path in (config, installed.confdir / "campaigns" / "rusty-flag.md", installed.unit):
        st = path.stat()
        assert st.st_uid == 0 and not st.st_mode & 0o022, path
    check = subprocess.run([str(agent), "check", "--config", str(config)],
                           capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "Rusty Flag" in check.stdout and "mode enforce" in check.stdout


def test_unit_verifies_offline(installed: Installed) -> None:
    unit = installed.unit.read_text()
    assert f"ExecStart={installed.prefix}/venv/bin/rustyflag-agent run" in unit
    if _systemd_version() >= 253:
        assert "Type=notify-reload" in unit
    else:
        assert "Type=notify\nExecReload=/bin/kill -HUP $MAINPID" in unit
    verify = subprocess.run(["systemd-analyze", "verify", str(installed.unit)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert verify.returncode == 0, verify.stderr
    # Warnings (unknown keys, unparsable values) go to stderr without failing: none wanted.
    assert verify.stderr.strip() == "", verify.stderr


def test_exposure_score_offline(installed: Installed) -> None:
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(installed.unit)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out.stdout)
    assert match, out.stdout[-1000:] + out.stderr
    score = float(match[1])
    print(f"systemd-analyze security --offline=true: exposure {score}")
    assert score <= MAX_EXPOSURE


def test_reinstall_keeps_edited_config_and_uninstall_removes_the_rest(
    installed: Installed,
) -> None:
    config = installed.confdir / "agent.toml"
    edited = config.read_text() + "# operator edit\n"
    config.write_text(edited)
    again = installed.make("install")
    assert again.returncode == 0 and "kept existing" in again.stdout, again.stderr
    assert config.read_text() == edited
    gone = installed.make("uninstall")
    assert gone.returncode == 0, gone.stderr
    assert f"kept edited {config}" in gone.stdout
    assert not installed.prefix.exists() and not installed.unit.exists()
    assert not (installed.confdir / "campaigns").exists()
    assert sorted(p.name for p in installed.confdir.iterdir()) == ["agent.toml"]
