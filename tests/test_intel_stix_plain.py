"""STIX 2.1 bundles and plain lists."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.intel.model import CampaignKind, Confidence, IOAType, LoadResult
from agent.intel.plainlist import is_hostname, parse_plainlist
from agent.intel.stix import parse_stix, stix_confidence, unquote_stix_string
from tests.data.intel.make_stix_fixture import build

DATA = Path(__file__).resolve().parent / "data" / "intel"
STIX = DATA / "stix-rusty-flag.json"


def test_stix_fixture_is_what_the_generator_writes() -> None:
    assert json.loads(STIX.read_text()) == json.loads(build().serialize())


def test_stix_bundle_maps_to_campaign() -> None:
    result = parse_stix(STIX.read_text(), str(STIX))
    assert result.ok
    (c,) = result.campaigns
    assert c.name == "Rusty Flag"
    assert c.kind is CampaignKind.CAMPAIGN
    values = [(i.value, i.actor, i.confidence) for i in c.iocs]
    assert values == [
        ("78.135.73.140", "Rusty Flag", Confidence.HIGH),
        ("2001:db8:bad::/48", "Rusty Flag", Confidence.MEDIUM),
        ("198.51.100.0/24", "Rusty Flag", Confidence.MEDIUM),
        ("Update.Rusty-Flag.example", "Rusty Flag", Confidence.LOW),
        ("metrics.rusty-flag.example", None, Confidence.MEDIUM),  # indicates a technique only
    ]
    assert c.iocs[0].network == ipaddress.ip_network("78.135.73.140/32")
    assert [(i.type, i.value) for i in c.ioas] == [(IOAType.FILE, "/api/totals/last/1")]
    assert [(t.attack_id, t.cwes) for t in c.techniques] == [
        ("T1505", ("CWE-89",)),
        ("T1059.007", ("CWE-79",)),
    ]
    assert c.references[0].startswith("https://www.deepinstinct.com/")
    # The file-hash indicator cannot be enforced at the network edge: a warning, not an error.
    assert any("file:" in p.message and not p.fatal for p in result.problems)


def test_stix_invalid_bundles_are_fatal() -> None:
    for text in ("{", "[]", '{"type": "report"}', '{"type": "bundle", "id": "nope"}'):
        result = parse_stix(text, "bad.json")
        assert not result.ok, text
        assert result.campaigns == ()


def test_stix_bad_pattern_is_a_warning() -> None:
    bundle = json.loads(STIX.read_text())
    for obj in bundle["objects"]:
        if obj["id"].startswith("indicator--a932"):
            obj["pattern"] = "[ipv4-addr:value = '78.135.73.140'"  # unbalanced
    result = parse_stix(json.dumps(bundle), "x.json")
    # stix2 itself validates patterns: the bundle is then invalid (fatal), or the
    # indicator is skipped with a warning; either way no crash and no bogus IOC.
    if result.campaigns:
        assert "78.135.73.140" not in [i.value for i in result.campaigns[0].iocs]
    else:
        assert not result.ok


def test_stix_name_falls_back_to_stem() -> None:
    bundle = json.loads(STIX.read_text())
    bundle["objects"] = [o for o in bundle["objects"] if o["type"] != "campaign"]
    bundle["objects"] = [o for o in bundle["objects"] if o["type"] != "relationship"]
    (c,) = parse_stix(json.dumps(bundle), "/x/feeds/acme-feed.json").campaigns
    assert c.name == "acme-feed"


def test_stix_helpers() -> None:
    assert stix_confidence(90) is Confidence.HIGH
    assert stix_confidence(30) is Confidence.MEDIUM
    assert stix_confidence(0) is Confidence.LOW
    assert stix_confidence(None) is Confidence.MEDIUM
    assert unquote_stix_string("'it\\'s'") == "it's"


def test_firehol_list() -> None:
    path = DATA / "firehol-sample.netset"
    result = parse_plainlist(path.read_text(), str(path))
    (c,) = result.campaigns
    assert c.name == "firehol-sample"
    assert [i.value for i in c.iocs] == [
        "192.0.2.1",
        "198.51.100.0/24",
        "2001:db8::/32",
        "evil.example.com",
        "203.0.113.5",
    ]
    assert [i.source.line for i in c.iocs] == [4, 5, 7, 8, 10]
    (problem,) = result.problems
    assert str(problem) == f"{path}:9: not an IP, CIDR or hostname: 'not a host!'"
    assert not problem.fatal


def test_ipsum_list() -> None:
    path = DATA / "ipsum-sample.txt"
    result = parse_plainlist(path.read_text(), str(path))
    (c,) = result.campaigns
    assert [i.value for i in c.iocs] == ["45.148.10.174", "80.94.95.115"]
    (problem,) = result.problems
    assert problem.source.line == 8


def test_is_hostname() -> None:
    assert is_hostname("a.example.com.")
    assert not is_hostname("2.57.122.999")
    assert not is_hostname("localhost")
    assert not is_hostname("bad_char$.com")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=500))
def test_plain_and_stix_parsers_never_raise(text: str) -> None:
    assert isinstance(parse_plainlist(text, "x.txt"), LoadResult)
    assert isinstance(parse_stix(text, "x.json"), LoadResult)
    assert isinstance(parse_stix("{" + text, "x.json"), LoadResult)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_mutated_stix_bundle_never_raises(data: st.DataObject) -> None:
    text = STIX.read_text()
    position = data.draw(st.integers(0, len(text) - 1))
    replacement = data.draw(st.text(max_size=5))
    mutated = text[:position] + replacement + text[position + 1 :]
    assert isinstance(parse_stix(mutated, "m.json"), LoadResult)
