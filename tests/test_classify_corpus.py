"""Corpus-level correctness of the classifiers (recall and false positives, not timing).

The corpora are built by bench/build_corpus.py (see tests/data/corpus/README.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.core.classify import classify_value
from agent.intel.model import ArgumentType, EvidenceKind

CORPUS = Path(__file__).parent / "data" / "corpus"


def load(name: str) -> list[str]:
    # newline="": values may hold \r, \v, \f; only \n separates them.
    with open(CORPUS / name, encoding="utf-8", newline="") as handle:
        return [line for line in handle.read().split("\n") if line]


def share(values: list[str], kind: EvidenceKind, expected: ArgumentType | None = None) -> float:
    hits = sum(1 for v in values if any(f.kind == kind for f in classify_value(v, expected)))
    return hits / len(values)


def flagged(values: list[str], expected: ArgumentType | None = None) -> list[str]:
    return [v for v in values if classify_value(v, expected)]


@pytest.fixture(scope="module")
def sqli() -> list[str]:
    return load("sqli.txt")


@pytest.fixture(scope="module")
def xss() -> list[str]:
    return load("xss.txt")


@pytest.fixture(scope="module")
def benign() -> list[str]:
    return load("benign.txt")


@pytest.fixture(scope="module")
def integers() -> list[str]:
    return load("integers.txt")


def test_corpora_are_big_enough(
    sqli: list[str], xss: list[str], benign: list[str], integers: list[str]
) -> None:
    assert len(sqli) >= 2000 and len(xss) >= 500
    assert len(benign) >= 5000 and len(integers) >= 3000


def test_sqli_recall(sqli: list[str]) -> None:
    assert share(sqli, EvidenceKind.SQLI) >= 0.99


def test_xss_recall(xss: list[str]) -> None:
    assert share(xss, EvidenceKind.XSS) >= 0.99


def test_benign_false_positives(benign: list[str]) -> None:
    assert len(flagged(benign)) <= len(benign) * 0.001


def test_integers_never_flagged(integers: list[str]) -> None:
    assert flagged(integers, ArgumentType.INTEGER) == []
    assert flagged(integers) == []


def test_every_non_integer_is_a_type_violation(
    sqli: list[str], xss: list[str], benign: list[str]
) -> None:
    non_integers = [v for v in sqli + xss + benign if not v.lstrip("+-").isdecimal()]
    assert share(non_integers, EvidenceKind.TYPE_VIOLATION, ArgumentType.INTEGER) == 1.0


def test_held_out_lists() -> None:
    # Public lists the rules were not written against: looser bounds, documented
    # in docs/detection.md (libinjection's own false-positive list is hard).
    assert share(load("heldout_sqli.txt"), EvidenceKind.SQLI) >= 0.95
    assert share(load("heldout_xss.txt"), EvidenceKind.XSS) >= 0.95
    held_out_benign = load("heldout_benign.txt")
    assert len(flagged(held_out_benign)) <= len(held_out_benign) * 0.02
