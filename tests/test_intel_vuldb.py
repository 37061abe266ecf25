"""VulDB CTI Markdown loader: exact counts on every sample page, real variants, robustness."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.intel.model import IOC, CampaignKind, Confidence, IOAType, LoadResult, SourceRef
from agent.intel.vuldb import (
    build_ioc,
    host_network_v4,
    parse_ip_cell,
    parse_vuldb,
    slugify,
    strip_code,
)
from tests.helpers import SAMPLES

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "intel"

# Counted by hand / with awk on the pages (not with the parser):
# name, kind, IOC rows, TTP rows, IOA entries, actors, withheld per section.
EXPECTED: dict[str, tuple[str, CampaignKind, int, int, int, int, dict[str, int]]] = {
    "actor-3cx-backdoor.md": (
        "3CX Backdoor", CampaignKind.ACTOR, 5, 4, 10, 0,
        {"country": 2, "ioc": 18, "ttp": 15, "ioa": 85},
    ),
    "actor-belialdemon.md": (
        "BelialDemon", CampaignKind.ACTOR, 3, 3, 3, 0, {"ttp": 1, "ioa": 4},
    ),
    "actor-bqtlock.md": ("BQTlock", CampaignKind.ACTOR, 1, 2, 2, 0, {}),
    "actor-bundlebot.md": (
        "BundleBot", CampaignKind.ACTOR, 3, 3, 3, 0, {"ioc": 1, "ttp": 7, "ioa": 10},
    ),
    "actor-bypassuac.md": ("Bypassuac", CampaignKind.ACTOR, 1, 0, 0, 0, {}),
    "actor-meterpreter.md": (
        "Meterpreter", CampaignKind.ACTOR, 992, 5, 139, 0,
        {"country": 1, "ioc": 3966, "ttp": 21, "ioa": 1247},
    ),
    "actor-monero-miner.md": ("Monero Miner", CampaignKind.ACTOR, 3, 3, 2, 0, {"ioc": 2}),
    "actor-tonedeaf.md": ("TONEDEAF", CampaignKind.ACTOR, 1, 0, 1, 0, {}),
    "campaign-camerashy.md": (
        "Camerashy", CampaignKind.CAMPAIGN, 3, 6, 59, 1, {"ioc": 8, "ttp": 26, "ioa": 527},
    ),
    "campaign-rusty-flag-2024.md": ("Rusty Flag", CampaignKind.CAMPAIGN, 1, 3, 2, 1, {}),
    "campaign-rusty-flag.md": ("Rusty Flag", CampaignKind.CAMPAIGN, 1, 3, 2, 1, {}),
    "campaign-viceleaker.md": (
        "ViceLeaker", CampaignKind.CAMPAIGN, 3, 3, 3, 1, {"country": 1, "ttp": 3},
    ),
    "rusty-flag.md": ("Rusty Flag", CampaignKind.CAMPAIGN, 1, 3, 2, 1, {}),
}  # fmt: skip


def page_path(name: str) -> Path:
    return REPO / "configs" / "campaigns" / name if name == "rusty-flag.md" else SAMPLES / name


def load(path: Path) -> LoadResult:
    return parse_vuldb(path.read_text(encoding="utf-8"), str(path))


needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason="sample pages not present")


@needs_samples
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_expected_table_agrees_with_a_regex_count(name: str) -> None:
    """The hand table is checked against the page by a second, regex-based count."""
    text = page_path(name).read_text(encoding="utf-8")
    _, _, iocs, ttps, ioas, actors, withheld = EXPECTED[name]
    sections = re.split(r"^## ", text, flags=re.M)

    def rows(prefix: str) -> int:
        body = next((s for s in sections if s.startswith(prefix)), "")
        return len(re.findall(r"^\d+ \| (?!\.\.\.)", body, flags=re.M))

    assert rows("IOC") == iocs
    assert rows("TTP") == ttps
    assert rows("IOA") == ioas  # no a/b arguments on the samples
    assert rows("Actors") == actors
    found = {
        m.group(2).lower(): int(m.group(1))
        for m in re.finditer(r"^There are (\d+) more (\w+) items", text, flags=re.M)
    }
    assert found == withheld


@needs_samples
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_pages_parse_with_exact_counts(name: str) -> None:
    title, kind, iocs, ttps, ioas, actors, withheld = EXPECTED[name]
    result = load(page_path(name))
    assert result.ok
    (campaign,) = result.campaigns
    assert campaign.name == title
    assert campaign.kind is kind
    assert len(campaign.iocs) == iocs
    assert len(campaign.techniques) == ttps
    assert len(campaign.ioas) == ioas
    assert len(campaign.actors) == actors
    assert dict(campaign.withheld) == withheld
    # One warning per withheld section, located at the "There are N more" line.
    withheld_warnings = [p for p in result.problems if "withholds" in p.message]
    assert len(withheld_warnings) == len(withheld)
    assert all(not p.fatal and p.source.line > 0 for p in result.problems)
    assert len(campaign.content_hash) == 64


@needs_samples
def test_rusty_flag_page_content() -> None:
    (campaign,) = load(page_path("rusty-flag.md")).campaigns
    (ioc,) = campaign.iocs
    assert ioc.network == ipaddress.ip_network("78.135.73.140/32")
    assert ioc.hostname is None
    assert ioc.actor == "Unknown"
    assert ioc.id == "rusty-flag:ioc:1"
    assert ioc.source.line == 21
    assert [(t.attack_id, t.cwes) for t in campaign.techniques] == [
        ("T1059.007", ("CWE-79",)),
        ("T1222", ("CWE-275",)),
        ("T1505", ("CWE-89",)),
    ]
    assert [(i.type, i.value, i.confidence) for i in campaign.ioas] == [
        (IOAType.FILE, "metrics-ui/server/srv.go", Confidence.HIGH),
        (IOAType.ARGUMENT, "num", Confidence.LOW),
    ]
    assert campaign.references == (
        "https://www.deepinstinct.com/blog/"
        "operation-rusty-flag-a-malicious-campaign-against-azerbaijanian-targets",
    )


@needs_samples
def test_republished_page_differs_only_in_hash_and_description() -> None:
    (old,) = load(SAMPLES / "campaign-rusty-flag-2024.md").campaigns
    (new,) = load(SAMPLES / "campaign-rusty-flag.md").campaigns
    assert old.content_hash != new.content_hash
    assert [i.network for i in old.iocs] == [i.network for i in new.iocs]
    assert [t.attack_id for t in old.techniques] == [t.attack_id for t in new.techniques]


@needs_samples
def test_sample_specific_variants() -> None:
    (camerashy,) = load(SAMPLES / "campaign-camerashy.md").campaigns
    assert camerashy.iocs[2].hostname == "shibakov.org"
    assert camerashy.techniques[0].cwes == ("CWE-22", "CWE-24", "CWE-36", "CWE-425")
    assert camerashy.countries == ("US",)
    assert camerashy.actors[0].name == "Naikon"
    (vice,) = load(SAMPLES / "campaign-viceleaker.md").campaigns
    assert (IOAType.PATTERN, "|11|") in [(i.type, i.value) for i in vice.ioas]
    (bundlebot,) = load(SAMPLES / "actor-bundlebot.md").campaigns
    assert (IOAType.LIBRARY, "/_vti_bin/shtml.dll") in [(i.type, i.value) for i in bundlebot.ioas]
    (tonedeaf,) = load(SAMPLES / "actor-tonedeaf.md").campaigns
    assert [(i.type, i.value) for i in tonedeaf.ioas] == [(IOAType.NETWORK_PORT, "udp/123 (ntp)")]
    (monero,) = load(SAMPLES / "actor-monero-miner.md").campaigns
    assert (IOAType.INPUT_VALUE, "/..") in [(i.type, i.value) for i in monero.ioas]
    (belial,) = load(SAMPLES / "actor-belialdemon.md").campaigns
    assert belial.related_campaigns == ("Matanbuchus",)
    assert all(i.actor == "BelialDemon" for i in belial.iocs)
    assert belial.countries == ("TT", "CO")


def test_2022_generation_plain_cells_and_four_columns() -> None:
    result = load(DATA / "vuldb-2022-apt28.md")
    (c,) = result.campaigns
    assert c.kind is CampaignKind.ACTOR
    assert [i.value for i in c.iocs] == [
        "5.63.153.177", "5.100.155.82", "5.199.171.58", "66.172.12.133", "45.32.129.185",
    ]  # fmt: skip
    assert c.iocs[0].hostname == "5-63-153-177.ovz.vps.regruhosting.ru"
    assert c.iocs[4].confidence is Confidence.MEDIUM
    assert [t.cwes for t in c.techniques] == [(), (), ()]
    assert c.techniques[2].description == (
        "Improper Restriction of Excessive Authentication Attempts"
    )
    assert c.countries == ("NL", "RO", "US")
    assert c.related_campaigns == ("Carberp", "Fysbis", "Global Brute Force")
    assert dict(c.withheld) == {"campaign": 3, "country": 3, "ioc": 185, "ttp": 7, "ioa": 300}
    values = [i.value for i in c.ioas]
    assert "admin-ajax.php?action=get_wdtable order[0][dir]" in values
    assert "admin\\model\\catalog\\download.php" in values


def test_2021_generation_argument_input_value_network_port() -> None:
    (c,) = load(DATA / "vuldb-2021-bronze-union.md").campaigns
    by_type = {(i.type, i.value) for i in c.ioas}
    assert (IOAType.ARGUMENT, "SERVICES") in by_type
    curl = "curl -d SERVICES=DEVICE.ACCOUNT http://192.168.0.1/getcfg.php"
    assert (IOAType.INPUT_VALUE, curl) in by_type
    assert (IOAType.NETWORK_PORT, "Web Server Port") in by_type
    assert len(c.ioas) == 8
    assert dict(c.withheld) == {"ioc": 6}


def test_2026_generation_path_style_links() -> None:
    (c,) = load(DATA / "vuldb-2026-taiwanese-orgs.md").campaigns
    assert c.kind is CampaignKind.CAMPAIGN
    assert [i.value for i in c.iocs] == ["39.98.208.61", "45.88.192.118", "45.141.139.222"]
    assert [i.actor for i in c.iocs] == ["Flax Typhoon", "Flax Typhoon", "UNK_DropPitch"]
    assert c.countries == ("CN", "HK", "US")
    assert [a.name for a in c.actors] == ["Flax Typhoon", "Winos", "UNK_DropPitch"]
    assert dict(c.withheld) == {"actor": 2, "country": 2, "ioc": 24, "ttp": 21, "ioa": 629}


def test_indicators_with_escapes_braces_fragments() -> None:
    (c,) = load(DATA / "vuldb-2024-amazon-aws.md").campaigns
    assert [i.value for i in c.ioas] == [
        ".jsp",
        "//proc/kcore",
        "/admin.php?p=/Area/index#tab=t2",
        "/Applications/Google\\ Drive.app/Contents/MacOS",
        "/cwp_{SESSION_HASH}/admin/loader_ajax.php",
    ]
    assert c.techniques[0].cwes == ("CWE-21", "CWE-22", "CWE-23", "CWE-24", "CWE-425")


def test_dot_hostname_means_no_hostname() -> None:
    # "." would normalize to "" and match every empty Host header or SNI.
    result = load(DATA / "vuldb-2026-mystic-stealer-dot-host.md")
    assert [str(p.message) for p in result.problems] == [
        "page withholds 71 more ioc items (truncated by VulDB)"
    ]
    (c,) = result.campaigns
    assert [(str(i.network), i.hostname) for i in c.iocs] == [
        ("5.42.92.88/32", "hosted-by.yeezyhost.net"),
        ("5.42.92.211/32", None),
        ("5.42.94.125/32", "juicy-milk.aeza.network"),
    ]
    assert dict(c.withheld) == {"ioc": 71}
    # The general row parser (used for rows the fast loop refuses) agrees.
    slow = parse_vuldb(
        "# M - Cyber Threat Intelligence\n\nthe actor known as M\n\n## IOC\n\n"
        "ID | IP address | Hostname | Campaign | Confidence\n1 | 999.1.1.1 | . | - | Middle\n"
        "2 | 1.2.3.4 | . | - | Middle\n",
        "m.md",
    )
    assert [(str(i.network), i.hostname) for i in slow.campaigns[0].iocs] == [("1.2.3.4/32", None)]


def test_2021_partial_address_is_a_block() -> None:
    result = load(DATA / "vuldb-2021-apt1-partial-ip.md")
    assert [p.message for p in result.problems] == [
        "page withholds 8 more ioc items (truncated by VulDB)",
        "page withholds 10537 more ioa items (truncated by VulDB)",
    ]
    (c,) = result.campaigns
    assert [str(i.network) for i in c.iocs] == [
        "27.102.112.179/32",
        "58.246.0.0/16",
        "58.247.0.0/16",
        "67.222.16.131/32",
    ]
    assert [i.source.line for i in c.iocs] == [11, 12, 13, 14]
    assert [i.value for i in c.ioas] == [
        "$HOME/.nylas-mail",
        "%ProgramData%\\CTES",
        "'phpshell.php",
        '"/xml/system/setAttribute.xml',
        "%windir%\\Internet Logs\\",
    ]
    assert dict(c.withheld) == {"ioc": 8, "ioa": 10537}
    assert parse_ip_cell("1.2.3.") == ipaddress.ip_network("1.2.3.0/24")
    for not_a_block in ("58.", "1.2.3.4.", "01.2.", "256.1.", "a.b.", "58.246"):
        assert parse_ip_cell(not_a_block) is None, not_a_block


def test_2022_actor_bullets_are_actors() -> None:
    result = load(DATA / "vuldb-2022-solarwinds-actor-bullets.md")
    assert [p.message for p in result.problems] == [
        "page withholds 2 more ioc items (truncated by VulDB)"
    ]
    (c,) = result.campaigns
    assert c.kind is CampaignKind.CAMPAIGN
    assert [(a.name, a.confidence) for a in c.actors] == [("SilverFish", Confidence.HIGH)]
    assert [(str(i.network), i.actor) for i in c.iocs] == [
        ("5.61.57.152/32", "SilverFish"),
        ("74.72.74.142/32", "SilverFish"),
    ]


def test_html_entities_in_names_are_decoded() -> None:
    (c,) = load(DATA / "vuldb-2024-bluekeep-entity.md").campaigns
    assert c.kind is CampaignKind.ACTOR
    assert c.related_campaigns == ("CVE\u20132019-0708",)
    assert [i.actor for i in c.iocs] == ["BlueKeep", "BlueKeep"]
    # The general row parser decodes too (a hostname with a space sends the row there).
    page = (
        "# X - Cyber Threat Intelligence\n\nthe campaign known as _X_\n\n## IOC\n\n"
        "ID | IP address | Hostname | Actor | Confidence\n"
        "1 | 1.2.3.4 | a b | [A&amp;B](https://vuldb.com/?actor.ab) | High\n"
    )
    (x,) = parse_vuldb(page, "x.md").campaigns
    assert [(i.actor, i.hostname) for i in x.iocs] == [("A&B", None)]


def test_synthetic_edge_cases() -> None:
    result = load(DATA / "vuldb-synthetic-edge.md")
    assert result.ok  # only warnings
    (c,) = result.campaigns
    nets = [str(i.network) if i.network else None for i in c.iocs]
    assert nets == [
        "2001:db8::1/128",
        "198.51.100.0/24",
        "192.0.2.7/32",
        "2001:db8:1::/48",
        None,  # 010.1.2.3: leading zero rejected, the hostname kept
        "203.0.113.9/32",
        None,  # hostname only
    ]
    assert c.iocs[4].hostname == "leading-zero.example.org"
    assert c.iocs[5].confidence is Confidence.LOW  # "Certain" is unknown
    ioas = [(i.type, i.value) for i in c.ioas]
    assert ioas == [
        (IOAType.ARGUMENT, "id"),
        (IOAType.ARGUMENT, "num"),
        (IOAType.PATTERN, "|11|"),
        (IOAType.INPUT_VALUE, "a | b | c"),
        (IOAType.LIBRARY, "C:\\Windows\\System32\\evil lib.dll"),
        (IOAType.NETWORK_PORT, "udp/123 (ntp)"),
        (IOAType.FILE, "/x.php"),
    ]
    assert c.ioas[0].source == c.ioas[1].source  # both names come from one row
    messages = [str(p) for p in result.problems]
    path = str(DATA / "vuldb-synthetic-edge.md")
    assert f"{path}:14: invalid IP address '999.1.2.3'" in messages
    assert f"{path}:27: unknown IOA type 'Registry Key', skipped" in messages
    assert f"{path}:15: unknown confidence 'Certain', read as Low" in messages
    assert len({i.id for i in c.ioas}) == len(c.ioas)


def test_not_a_page_is_a_fatal_problem() -> None:
    result = parse_vuldb("hello\nworld\n", "x.md")
    assert not result.ok
    assert result.campaigns == ()
    assert "not a VulDB CTI page" in result.problems[-1].message


def test_helpers() -> None:
    assert slugify("Rusty Flag") == "rusty-flag"
    assert slugify("3CX Backdoor!") == "3cx-backdoor"
    assert slugify("  ") == "unnamed"
    assert strip_code("`|11|`") == "|11|"
    assert strip_code("`` a`b ``") == "a`b"
    assert parse_ip_cell("[1.2.3.4](https://vuldb.com/?ip.1.2.3.4)") == ipaddress.ip_network(
        "1.2.3.4/32"
    )
    assert parse_ip_cell("1.2.3") is None
    assert parse_ip_cell("10.0.0.1/8") == ipaddress.ip_network("10.0.0.0/8")


# --- robustness: the parser only ever returns a LoadResult -------------------


def _real_pages() -> list[str]:
    pages = sorted(p for p in DATA.glob("vuldb-*.md"))
    if SAMPLES.is_dir():
        pages += sorted(p for p in SAMPLES.glob("*.md") if p.name != "actor-meterpreter.md")
    return [p.read_text(encoding="utf-8") for p in pages]


REAL_PAGES = _real_pages()
MARKDOWNISH = st.text(
    alphabet=st.sampled_from([*"|`[]()#*-. \n\t0123456789abcTIOCAP:/\\\r", "\u00e9", "\x00"]),
    max_size=400,
)


def _assert_load_result(result: object) -> None:
    assert isinstance(result, LoadResult)
    for campaign in result.campaigns:
        assert len({i.id for i in campaign.iocs}) == len(campaign.iocs)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=2000))
def test_random_text_never_raises(text: str) -> None:
    _assert_load_result(parse_vuldb(text, "random.md"))


@settings(max_examples=300, deadline=None)
@given(MARKDOWNISH)
def test_markdownish_text_never_raises(text: str) -> None:
    head = "# X - Cyber Threat Intelligence\n## IOC\nID | a\n"
    _assert_load_result(parse_vuldb(head + text, "m.md"))


@st.composite
def mutated_page(draw: st.DrawFn) -> str:
    lines = draw(st.sampled_from(REAL_PAGES)).split("\n")
    for _ in range(draw(st.integers(0, 8))):
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "flip", "truncate", "insert"]))
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "flip" and lines[i]:
            k = draw(st.integers(0, len(lines[i]) - 1))
            ch = chr(ord(lines[i][k]) ^ (1 << draw(st.integers(0, 7))))
            lines[i] = lines[i][:k] + ch + lines[i][k + 1 :]
        elif op == "truncate":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        elif op == "insert":
            lines.insert(i, draw(MARKDOWNISH))
    text = "\n".join(lines)
    if draw(st.booleans()):
        text = text[: draw(st.integers(0, len(text)))]
    return text


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_page())
def test_mutated_real_pages_never_raise(text: str) -> None:
    _assert_load_result(parse_vuldb(text, "mutated.md"))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_random_bytes_decoded_never_raise(data: bytes) -> None:
    _assert_load_result(parse_vuldb(data.decode("utf-8", "replace"), "bytes.md"))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_fast_host_network_equals_stdlib(value: int) -> None:
    fast = host_network_v4(value)
    slow = ipaddress.IPv4Network(value)
    assert type(fast) is type(slow)
    assert fast == slow and hash(fast) == hash(slow)
    assert str(fast) == str(slow) and repr(fast) == repr(slow)
    assert fast.prefixlen == 32 and fast.num_addresses == 1
    assert list(fast.hosts()) == list(slow.hosts()) == [slow.network_address]
    assert fast.broadcast_address == slow.broadcast_address
    assert sorted(vars(fast)) == sorted(vars(slow))
    assert slow.network_address in fast and fast.subnet_of(slow)
    assert list(ipaddress.collapse_addresses([fast, slow])) == [slow]


@needs_samples
@pytest.mark.parametrize("name", ["actor-meterpreter.md", "campaign-camerashy.md"])
def test_inline_ioc_loop_agrees_with_the_row_parser(name: str) -> None:
    """The hot IOC loop and the general row parser give identical IOCs.

    An extra header column makes every row's width differ from the header's,
    which sends each row through `_ioc_row` instead of the inline loop.
    """
    text = (SAMPLES / name).read_text(encoding="utf-8")
    header = next(line for line in text.split("\n") if line.startswith("ID | IP address"))
    slow_text = text.replace(header, header + " | Extra")
    (fast,) = parse_vuldb(text, name).campaigns
    (slow,) = parse_vuldb(slow_text, name).campaigns
    assert len(fast.iocs) > 0
    assert fast.iocs == slow.iocs
    assert fast.related_campaigns == slow.related_campaigns


@pytest.mark.parametrize(
    "name",
    [
        "vuldb-2026-mystic-stealer-dot-host.md",
        "vuldb-2021-apt1-partial-ip.md",
        "vuldb-2022-solarwinds-actor-bullets.md",
        "vuldb-2024-bluekeep-entity.md",
    ],
)
def test_inline_ioc_loop_agrees_on_collection_variants(name: str) -> None:
    text = (DATA / name).read_text(encoding="utf-8")
    header = next(line for line in text.split("\n") if line.startswith("ID | IP address"))
    (fast,) = parse_vuldb(text, name).campaigns
    (slow,) = parse_vuldb(text.replace(header, header + " | Extra"), name).campaigns
    assert len(fast.iocs) > 0
    assert fast.iocs == slow.iocs
    assert fast.related_campaigns == slow.related_campaigns


def test_defensive_singular_withheld_and_linked_technique() -> None:
    page = (
        "# A - Cyber Threat Intelligence\n"
        "of the actor known as [A](x)\n"
        "## TTP\n"
        "ID | Technique | Description | Confidence\n"
        "1 | [T1059](https://attack.mitre.org/techniques/T1059/) | Injection | High\n"
        "2 | ... | ... | ...\n"
        "\n"
        "There is 1 more TTP item available.\n"
    )
    result = parse_vuldb(page, "a.md")
    (c,) = result.campaigns
    assert [t.attack_id for t in c.techniques] == ["T1059"]
    assert c.withheld == (("ttp", 1),)
    assert [str(p) for p in result.problems] == [
        "a.md:8: page withholds 1 more ttp items (truncated by VulDB)"
    ]


def test_fast_ioc_builder_equals_the_dataclass() -> None:
    args = (
        "x:ioc:1",
        ipaddress.ip_network("192.0.2.1/32"),
        "h.example",
        "Actor",
        Confidence.MEDIUM,
        SourceRef("p.md", 3),
    )
    fast, slow = build_ioc(*args), IOC(*args)
    assert type(fast) is IOC
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.hostname = "other"  # type: ignore[misc]


def test_superscript_digit_in_withheld_count_is_a_warning_not_a_crash() -> None:
    # Found by hypothesis on a mutated real page: '²'.isdigit() is True, int('²') raises.
    page = (DATA / "vuldb-2026-mystic-stealer-dot-host.md").read_text()
    mutated = page + "\nThere are ² more IOC items available. Please use our online service.\n"
    result = parse_vuldb(mutated, "mutated.md")
    assert result.campaigns
    assert any("withheld-items line" in p.message for p in result.problems)
