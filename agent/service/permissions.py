"""Refuse config and intel files that someone other than root could change.

They steer the firewall: whoever can write them can block any address or let
an attacker's traffic through. Like sshd's StrictModes, every file and every
directory above it must be owned by root and not writable by group or others.
A world-writable directory with the sticky bit (/tmp) is accepted as an
ancestor, since others cannot replace entries they do not own there; a source
directory itself must not be writable by others at all (they could add pages).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from agent.errors import Problem

ROOT_UID = 0


def _writable_by_others(st: os.stat_result) -> str | None:
    """Why non-root users could write this inode, or None."""
    if st.st_uid != ROOT_UID:
        return f"owned by uid {st.st_uid}, not root"
    if st.st_mode & stat.S_IWOTH:
        return "writable by all users"
    if st.st_mode & stat.S_IWGRP and st.st_gid != ROOT_UID:
        return f"writable by group {st.st_gid}"
    return None


def _ancestors(path: Path) -> Iterable[Path]:
    return path.parents


def path_problems(path: Path, *, what: str, role: str = "file") -> list[Problem]:
    """Problems that make `path` (a file, or a directory of sources) unsafe to trust."""
    absolute = Path(os.path.abspath(path))
    try:
        st = absolute.stat()  # follows a symlink: its target is what gets read
    except FileNotFoundError:
        return []  # a missing file is the loader's problem, reported with its context
    except OSError as exc:
        return [Problem(str(path), 0, f"cannot check {what}: {exc.strerror}")]
    problems: list[Problem] = []
    why = _writable_by_others(st)
    if why is not None:
        problems.append(
            Problem(
                str(path),
                0,
                f"refusing {what} {role}: {why}; it steers the firewall "
                f"(fix: chown root:root {absolute} && chmod go-w {absolute})",
            )
        )
    real = Path(os.path.realpath(absolute))
    for parent in _ancestors(real):
        try:
            pst = parent.stat()
        except OSError:
            continue
        why = _writable_by_others(pst)
        sticky = bool(pst.st_mode & stat.S_ISVTX)
        if why is not None and not (sticky and pst.st_uid == ROOT_UID):
            problems.append(
                Problem(
                    str(path),
                    0,
                    f"refusing {what}: directory {parent} is {why}; "
                    "others could replace the file",
                )
            )
            break
    return problems


def source_problems(
    config_path: Path | None, intel_sources: Iterable[Path]
) -> list[Problem]:
    """Every ownership/permission problem of the config file and the intel sources."""
    problems: list[Problem] = []
    if config_path is not None:
        problems += path_problems(config_path, what="config")
    for source in intel_sources:
        if source.is_dir():
            problems += path_problems(source, what="intel", role="directory")
            for entry in sorted(source.iterdir()):
                if entry.is_file():
                    problems += path_problems(entry, what="intel")
        else:
            problems += path_problems(source, what="intel")
    return problems
