"""Property tests: the classifier is total, typed, and never flags an integer."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.classify import Finding, classify_value
from agent.intel.model import ArgumentType, EvidenceKind

KINDS = {EvidenceKind.SQLI, EvidenceKind.XSS, EvidenceKind.TYPE_VIOLATION}
expected_types = st.sampled_from([None, *ArgumentType])

# Text biased towards the characters attacks are made of.
attack_alphabet = st.sampled_from([
    *"'\"`;#-/*()<>=&|\\:{}$@!%+, \t\n\r\x00\xa0",
    "union", "select", " or ", " and ", "sleep(", "<script", "on", "javascript:", "&#",
    "\\x3c", "/*!", "--", "{{", "0x", "1",
])  # fmt: skip
attack_like = st.lists(attack_alphabet, max_size=60).map("".join)


def check_shape(findings: object) -> None:
    assert isinstance(findings, tuple)
    seen = set()
    for finding in findings:
        assert isinstance(finding, Finding)
        assert finding.kind in KINDS
        assert isinstance(finding.detail, str) and finding.detail
        assert finding.kind not in seen  # at most one finding per kind
        seen.add(finding.kind)


@given(st.text(), expected_types)
def test_total_on_any_text(value: str, expected: ArgumentType | None) -> None:
    check_shape(classify_value(value, expected))


@settings(max_examples=300)
@given(attack_like, expected_types)
def test_total_on_attack_like_text(value: str, expected: ArgumentType | None) -> None:
    check_shape(classify_value(value, expected))


@given(st.integers())
def test_integers_never_flagged(number: int) -> None:
    assert classify_value(str(number), ArgumentType.INTEGER) == ()
    assert classify_value(str(number), None) == ()


@given(st.from_regex(r"\A[+-]?[0-9]{1,40}\Z"))
def test_signed_zero_padded_integers_never_flagged(value: str) -> None:
    assert classify_value(value, ArgumentType.INTEGER) == ()


@given(st.text(min_size=1))
def test_integer_type_is_strict(value: str) -> None:
    findings = classify_value(value, ArgumentType.INTEGER)
    body = value[1:] if value[0] in "+-" else value
    is_integer = bool(body) and all(c in "0123456789" for c in body)
    assert (findings == ()) == is_integer
    if not is_integer:
        assert findings[0].kind is EvidenceKind.TYPE_VIOLATION


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_numbers_pass_number_type(number: float) -> None:
    assert classify_value(repr(number), ArgumentType.NUMBER) == ()


# Lone surrogates reach the classifier when the HTTP layer decodes with surrogateescape.
odd_characters = st.sampled_from(
    ["\udc80", "\ud800", "\x00", "\ufffd", "\uff1c", "\uff07", "\u2028", "\x85", "&#xd800;"]
)


@given(st.lists(st.one_of(odd_characters, attack_alphabet), max_size=40).map("".join))
def test_total_on_odd_code_points(value: str) -> None:
    check_shape(classify_value(value, None))
    check_shape(classify_value(value, ArgumentType.INTEGER))
