"""Sources (detection, directories, enrichment attachment) and the merged snapshot."""

from __future__ import annotations

import dataclasses
import ipaddress
import shutil
from pathlib import Path

import pytest

from agent.intel.model import (
    IOA,
    IOC,
    Campaign,
    CampaignKind,
    Confidence,
    IOAType,
    SourceRef,
)
from agent.intel.snapshot import NO_IOC_HITS, build_snapshot, intel_version_of
from agent.intel.sources import detect_format, enrichment_path, load_source, load_sources
from tests.helpers import SAMPLES

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "intel"
CAMPAIGNS = REPO / "configs" / "campaigns"


def packed(address: str) -> bytes:
    return ipaddress.ip_address(address).packed


def campaign_with(name: str, *values: str, content_hash: str = "h") -> Campaign:
    iocs = []
    for n, value in enumerate(values, start=1):
        is_host = not any(c.isdigit() for c in value.split("/")[0].split(".")[-1])
        iocs.append(
            IOC(
                id=f"{name}:ioc:{n}",
                network=None if is_host else ipaddress.ip_network(value, strict=False),
                hostname=value if is_host else None,
                actor=None,
                confidence=Confidence.HIGH,
                source=SourceRef(name, n),
            )
        )
    return Campaign(name, CampaignKind.CAMPAIGN, name, content_hash, iocs=tuple(iocs))


# --- sources -------------------------------------------------------------


def test_detect_format() -> None:
    assert detect_format((CAMPAIGNS / "rusty-flag.md").read_text()) == "vuldb"
    assert detect_format((DATA / "stix-rusty-flag.json").read_text()) == "stix"
    assert detect_format((DATA / "ipsum-sample.txt").read_text()) == "plain"
    assert detect_format("\ufeff# A - Cyber Threat Intelligence\n") == "vuldb"


def test_load_default_campaign_directory_attaches_enrichment() -> None:
    result = load_source(CAMPAIGNS)
    assert result.ok, [str(p) for p in result.problems]
    (campaign,) = result.campaigns
    assert campaign.name == "Rusty Flag"
    assert campaign.enrichment is not None
    assert campaign.enrichment.routes == ("/api/totals/last/{num}", "/api/diffs/last/{num}")


def test_enrichment_mismatch_is_reported_with_line(tmp_path: Path) -> None:
    shutil.copy(CAMPAIGNS / "rusty-flag.md", tmp_path / "rusty-flag.md")
    text = (CAMPAIGNS / "rusty-flag.enrich.toml").read_text()
    (tmp_path / "rusty-flag.enrich.toml").write_text(text.replace('"T1222"', '"T1190"'))
    result = load_source(tmp_path)
    assert not result.ok
    (problem,) = [p for p in result.problems if p.fatal]
    assert str(problem).startswith(f"{tmp_path / 'rusty-flag.enrich.toml'}:")
    assert problem.source.line > 0 and "T1190" in problem.message
    assert result.campaigns[0].enrichment is None


def test_enrichment_file_alone_is_not_a_source() -> None:
    result = load_source(CAMPAIGNS / "rusty-flag.enrich.toml")
    assert not result.ok and result.campaigns == ()


def test_unreadable_and_undecodable_files_are_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.md"
    bad.write_bytes(b"# X - Cyber Threat Intelligence\n\xff\xfe\n")
    result = load_source(bad)
    assert not result.ok
    assert str(result.problems[0]).startswith(f"{bad}:2: not UTF-8")
    missing = load_source(tmp_path / "nope.md")
    assert not missing.ok and "no such file" in missing.problems[0].message
    forced = load_source(DATA / "ipsum-sample.txt", "xml")
    assert not forced.ok and "unknown format" in forced.problems[0].message


def test_load_sources_with_format_override() -> None:
    plain = DATA / "ipsum-sample.txt"
    result = load_sources(
        [CAMPAIGNS, DATA / "stix-rusty-flag.json", plain], fmt_overrides={plain: "plain"}
    )
    assert [c.name for c in result.campaigns] == ["Rusty Flag", "Rusty Flag", "ipsum-sample"]
    assert result.ok


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="no samples")
def test_sample_directory_loads_sorted_without_notice() -> None:
    result = load_source(SAMPLES)
    assert result.ok
    names = [Path(c.source).name for c in result.campaigns]
    assert names == sorted(names) and "NOTICE.md" not in names and len(names) == 12


# --- snapshot ------------------------------------------------------------


def test_match_address_v4_v6_cidr_and_miss() -> None:
    a = campaign_with("a", "78.135.73.140", "10.0.0.0/8", "2001:db8::1", "192.0.2.9/32")
    b = campaign_with("b", "10.1.0.0/16", "2001:db8:bad::/48", "78.135.73.140")
    snap = build_snapshot([a, b])
    hits = snap.match_address(packed("78.135.73.140"))
    assert [(h.campaign.name, h.ioc.id) for h in hits] == [("a", "a:ioc:1"), ("b", "b:ioc:3")]
    assert [h.ioc.id for h in snap.match_address(packed("10.1.2.3"))] == ["b:ioc:1", "a:ioc:2"]
    assert [h.ioc.id for h in snap.match_address(packed("10.200.0.1"))] == ["a:ioc:2"]
    assert [h.ioc.id for h in snap.match_address(packed("2001:db8::1"))] == ["a:ioc:3"]
    assert [h.ioc.id for h in snap.match_address(packed("2001:db8:bad:1::5"))] == ["b:ioc:2"]
    assert [h.ioc.id for h in snap.match_address(packed("192.0.2.9"))] == ["a:ioc:4"]
    assert snap.match_address(packed("11.0.0.1")) is NO_IOC_HITS
    assert snap.match_address(packed("2001:db9::1")) is NO_IOC_HITS


def test_exact_only_snapshot_miss_is_shared_empty() -> None:
    snap = build_snapshot([campaign_with("a", "1.2.3.4")])
    assert snap.match_address(packed("1.2.3.5")) is NO_IOC_HITS
    assert len(snap.match_address(packed("1.2.3.4"))) == 1


def test_match_hostname() -> None:
    snap = build_snapshot([campaign_with("a", "Evil.Example.COM", "1.2.3.4")])
    assert [h.ioc.id for h in snap.match_hostname("evil.example.com.")] == ["a:ioc:1"]
    assert snap.match_hostname("sub.evil.example.com") == ()


def test_nft_sets_merge_prefixes_and_drop_covered_exacts() -> None:
    snap = build_snapshot(
        [
            campaign_with(
                "a", "10.0.0.0/25", "10.0.0.128/25", "10.0.0.7", "8.8.8.8", "192.0.2.1/32"
            ),
            campaign_with("b", "2001:db8::/33", "2001:db8:8000::/33", "2001:db8::1", "::1"),
        ]
    )
    assert snap.prefixes_v4 == (ipaddress.ip_network("10.0.0.0/24"),)
    assert snap.exact_v4 == {ipaddress.ip_address("8.8.8.8"), ipaddress.ip_address("192.0.2.1")}
    assert snap.prefixes_v6 == (ipaddress.ip_network("2001:db8::/32"),)
    assert snap.exact_v6 == {ipaddress.ip_address("::1")}


def test_ioas_arguments_counts_and_version() -> None:
    result = load_sources([CAMPAIGNS, DATA / "vuldb-synthetic-edge.md"])
    snap = build_snapshot(result.campaigns)
    assert [h.ioa.value for h in snap.ioas(IOAType.FILE)] == ["metrics-ui/server/srv.go", "/x.php"]
    assert sorted(snap.argument_ioas) == ["id", "num"]
    assert [h.campaign.name for h in snap.argument_ioas["num"]] == ["Rusty Flag", "Edge Case Lab"]
    assert snap.ioas(IOAType.PATTERN)[0].ioa.value == "|11|"
    assert [(c.name, c.iocs, c.techniques, c.ioas) for c in snap.counts] == [
        ("Rusty Flag", 1, 3, 2),
        ("Edge Case Lab", 7, 0, 7),
    ]
    assert snap.ioc_count == 8
    assert len(snap.intel_version) == 16
    # Order-independent; changes with the enrichment and with page content.
    assert build_snapshot(result.campaigns[::-1]).intel_version == snap.intel_version
    bare = [dataclasses.replace(c, enrichment=None) for c in result.campaigns]
    assert intel_version_of(bare) != snap.intel_version
    assert any("Edge Case Lab" in w or "invalid IP" in w for w in snap.warnings)


def test_split_argument_ioa_from_another_loader() -> None:
    ioa = IOA("x:ioa:1", IOAType.ARGUMENT, "User/Pass", Confidence.LOW, SourceRef("x"))
    c = Campaign("x", CampaignKind.ACTOR, "x", "h", ioas=(ioa,))
    snap = build_snapshot([c])
    assert sorted(snap.argument_ioas) == ["pass", "user"]


def test_duplicate_campaign_names_warn() -> None:
    snap = build_snapshot([campaign_with("a", "1.1.1.1"), campaign_with("a", "2.2.2.2")])
    assert any("loaded twice" in w for w in snap.warnings)


def test_enrichment_path_uses_the_stem() -> None:
    assert enrichment_path(Path("/a/rusty-flag.md")) == Path("/a/rusty-flag.enrich.toml")
    assert enrichment_path(Path("/a/apt.28.md")) == Path("/a/apt.28.enrich.toml")
    assert enrichment_path(Path("/a/feed.json")) == Path("/a/feed.enrich.toml")


def test_intel_version_follows_enrichment_values_not_its_path() -> None:
    (campaign,) = load_source(CAMPAIGNS).campaigns
    assert campaign.enrichment is not None
    moved = dataclasses.replace(
        campaign,
        enrichment=dataclasses.replace(campaign.enrichment, source=SourceRef("/elsewhere.toml")),
    )
    edited = dataclasses.replace(
        campaign, enrichment=dataclasses.replace(campaign.enrichment, notes="changed")
    )
    assert intel_version_of([moved]) == intel_version_of([campaign])
    assert intel_version_of([edited]) != intel_version_of([campaign])
