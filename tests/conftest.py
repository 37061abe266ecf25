"""Shared fixtures. `lab`: the namespace lab (tests/lab/netns.py), one per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.lab.netns import Lab, cleanup_stale, lab_unavailable_reason


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """client <-> gateway <-> server namespaces, isolation asserted; skipped without root."""
    reason = lab_unavailable_reason()
    if reason is not None:
        pytest.skip(f"namespace lab unavailable: {reason}")
    cleanup_stale()
    with Lab() as built:
        yield built
