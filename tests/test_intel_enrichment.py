"""Enrichment TOML: valid file, each invalid case with file:line, page checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.intel.enrichment import (
    check_against_campaign,
    line_of,
    parse_enrichment,
    validate_route,
)
from agent.intel.model import Action, ArgumentType, Enrichment, EvidenceKind, LoadProblem
from agent.intel.vuldb import parse_vuldb

REPO = Path(__file__).resolve().parent.parent
ENRICH = REPO / "configs" / "campaigns" / "rusty-flag.enrich.toml"
PAGE = REPO / "configs" / "campaigns" / "rusty-flag.md"

VALID = """campaign = "Rusty Flag"
cves = ["CVE-2015-10023"]
notes = "SQL injection through num"
routes = ["/api/totals/last/{num}", "/api/diffs/last/{num}"]

[arguments]
num = "integer"

[techniques]
sqli = "T1505"
xss = "T1059.007"

[actions]
ioc_address = "drop"
sqli = "flag"
"""


def parse_ok(text: str) -> Enrichment:
    parsed = parse_enrichment(text, "e.toml")
    assert isinstance(parsed, Enrichment), parsed
    return parsed


def parse_bad(text: str) -> list[LoadProblem]:
    parsed = parse_enrichment(text, "e.toml")
    assert isinstance(parsed, list), parsed
    return parsed


def test_shipped_enrichment_is_valid_for_its_page() -> None:
    text = ENRICH.read_text()
    enrichment = parse_enrichment(text, str(ENRICH))
    assert isinstance(enrichment, Enrichment)
    assert enrichment.cves == ("CVE-2015-10023",)
    assert enrichment.routes == ("/api/totals/last/{num}", "/api/diffs/last/{num}")
    assert enrichment.argument_type("num") is ArgumentType.INTEGER
    assert enrichment.technique_for(EvidenceKind.SQLI) == "T1505"
    assert enrichment.technique_for(EvidenceKind.FILE) == "T1222"
    assert enrichment.action_for(EvidenceKind.IOC_ADDRESS) is Action.DROP
    assert enrichment.action_for(EvidenceKind.SQLI) is Action.FLAG
    (campaign,) = parse_vuldb(PAGE.read_text(), str(PAGE)).campaigns
    assert check_against_campaign(enrichment, text, campaign) == []


def test_valid_minimal() -> None:
    e = parse_ok(VALID)
    assert e.argument_types == (("num", ArgumentType.INTEGER),)
    assert parse_ok('campaign = "X"\n').routes == ()


@pytest.mark.parametrize(
    ("replace", "by", "line", "fragment"),
    [
        ('num = "integer"', 'num = "int"', 7, "type 'int'"),
        ('sqli = "T1505"', 'sqlinjection = "T1505"', 10, "unknown evidence kind"),
        ('xss = "T1059.007"', 'xss = "1059"', 11, "not an ATT&CK ID"),
        ('sqli = "flag"', 'sqli = "block"', 15, "action 'block'"),
        ('"/api/diffs/last/{num}"', '"/api/diffs/last/{num"', 4, "parameter segment"),
        ('"/api/diffs/last/{num}"', '"api/diffs"', 4, "must start with '/'"),
        ('cves = ["CVE-2015-10023"]', 'cves = ["2015-10023"]', 2, "not a CVE ID"),
        ('campaign = "Rusty Flag"', 'campain = "Rusty Flag"', 1, "unknown key 'campain'"),
        ('notes = "SQL injection through num"', "notes = 3", 3, "must be a string"),
    ],
)
def test_invalid_cases_have_file_and_line(replace: str, by: str, line: int, fragment: str) -> None:
    assert replace in VALID
    problems = parse_bad(VALID.replace(replace, by))
    assert any(p.source.line == line and fragment in p.message for p in problems), [
        str(p) for p in problems
    ]
    assert all(p.source.path == "e.toml" and p.fatal for p in problems)


def test_missing_campaign_and_bad_toml() -> None:
    problems = parse_bad(VALID.replace('campaign = "Rusty Flag"\n', ""))
    assert any("'campaign'" in p.message for p in problems)
    (problem,) = parse_bad(VALID + "\n[arguments\n")
    assert problem.source.line == 17
    assert str(problem).startswith("e.toml:17: invalid TOML")


def test_page_checks_name_and_techniques() -> None:
    (campaign,) = parse_vuldb(PAGE.read_text(), str(PAGE)).campaigns
    text = VALID.replace('"Rusty Flag"', '"Rusty Flags"').replace('"T1059.007"', '"T1190"')
    problems = check_against_campaign(parse_ok(text), text, campaign)
    assert [(p.source.line, p.fatal) for p in problems] == [(1, True), (11, True)]
    assert "does not match the page's campaign 'Rusty Flag'" in problems[0].message
    assert "technique T1190 is not on the page" in problems[1].message


def test_route_validation_and_line_of() -> None:
    assert validate_route("/a/{b}/c") is None
    assert validate_route("/a/{b}/{b}") is not None
    assert validate_route("/a?x=1") is not None
    assert line_of(VALID, "num") == 7
    assert line_of(VALID, "sqli", line_of(VALID, "actions")) == 15


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_enrichment_parser_never_raises(text: str) -> None:
    for candidate in (text, VALID + text, text + VALID):
        result = parse_enrichment(candidate, "r.toml")
        assert isinstance(result, Enrichment) or all(isinstance(p, LoadProblem) for p in result)
