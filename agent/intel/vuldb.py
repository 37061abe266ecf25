"""VulDB CTI Markdown pages -> one `Campaign` per page.

Owns the page grammar of the public `vuldb/cyber_threat_intelligence`
collection in all its published generations (see docs/intel-formats.md):
plain or linked IP cells, 4- or 5-column IOC and TTP tables, `...` rows and
"There are N more X items available" lines for withheld data, backticked IOA
indicators that may contain `|`, 2021 address blocks written `58.246.`,
hostname `.` (no reverse name), 2022 `## Actors` bullets, HTML entities in
names. Checked against the collection by bench/check_vuldb_collection.py.
A line-oriented state machine with no backtracking regex; IPv4 rows take a
C fast path (`inet_pton`).

Pure: the text in, a `LoadResult` out; malformed input becomes LoadProblems.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.intel.model import (
    IOA,
    IOC,
    Actor,
    Campaign,
    CampaignKind,
    Confidence,
    IOAType,
    IPNetwork,
    LoadProblem,
    LoadResult,
    SourceRef,
    Technique,
)

TITLE_SUFFIX = " - Cyber Threat Intelligence"

_CONFIDENCES: dict[str, Confidence] = {c.value: c for c in Confidence}
# VulDB's older pages say "Middle" in a few places; treat as Medium.
_CONFIDENCES["Middle"] = Confidence.MEDIUM

_IOA_TYPES: dict[str, IOAType] = {
    "file": IOAType.FILE,
    "argument": IOAType.ARGUMENT,
    "library": IOAType.LIBRARY,
    "input value": IOAType.INPUT_VALUE,
    "pattern": IOAType.PATTERN,
    "network port": IOAType.NETWORK_PORT,
}

# Heading word -> section key; "There are N more <word> items" uses the same words.
_SECTIONS: dict[str, str] = {
    "ioc": "ioc",
    "ttp": "ttp",
    "ioa": "ioa",
    "countries": "country",
    "country": "country",
    "actors": "actor",
    "actor": "actor",
    "campaigns": "campaign",
    "campaign": "campaign",
    "references": "references",
    "reference": "references",
    "literature": "literature",
    "license": "license",
}

_WITHHELD_PREFIXES = ("There are ", "There is ")
_WITHHELD_MARK = " more "
_EMPTY_CELLS = frozenset({"", "-", "..."})
# VulDB writes "." for an address whose reverse lookup gave the root name
# (Meterpreter, Mystic Stealer); as a hostname IOC it would normalize to ""
# and match every empty Host/SNI, so it means "no hostname".
_EMPTY_HOSTS = _EMPTY_CELLS | {"."}

_RowParser = Callable[["_PageBuilder", list[str], str, int, "_Columns | None"], None]


def slugify(name: str) -> str:
    """Lowercase ASCII slug for indicator IDs: 'Rusty Flag' -> 'rusty-flag'."""
    out: list[str] = []
    dash = False
    for ch in name.lower():
        if ch.isascii() and ch.isalnum():
            out.append(ch)
            dash = False
        elif not dash and out:
            out.append("-")
            dash = True
    slug = "".join(out).strip("-")
    return slug or "unnamed"


def link_text(cell: str) -> str:
    """`[text](url)` -> text; anything else unchanged."""
    if cell.startswith("[") and "](" in cell:
        return cell[1 : cell.index("](")]
    return cell


def name_text(cell: str) -> str:
    """An actor/campaign/country cell or bullet -> the name, HTML entities decoded.

    Some pages write names with entities (BlueKeep: `CVE&ndash;2019-0708`).
    """
    text = link_text(cell)
    return html.unescape(text) if "&" in text else text


def parse_ip_cell(cell: str) -> IPNetwork | None:
    """An IOC's IP cell -> network (host route for a plain address); None if invalid.

    Dotted quads take the `inet_pton` fast path (strict: no leading zeros, no
    short forms); IPv6 and CIDR forms go through `ipaddress`.
    """
    text = link_text(cell).strip()
    if "/" not in text and ":" not in text:
        try:
            packed = socket.inet_pton(socket.AF_INET, text)
        except (OSError, ValueError):
            return _partial_ipv4(text)
        return ipaddress.IPv4Network(int.from_bytes(packed, "big"))
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _partial_ipv4(text: str) -> ipaddress.IPv4Network | None:
    """'58.246.' -> 58.246.0.0/16: 2 or 3 leading octets and a trailing dot.

    The 2021 pages write address blocks this way (APT1: `58.246.`, from the
    Mandiant report's netblocks); read like the CIDR cells they stand for.
    A single octet (a /8) is not taken: no page has one, and it would be a
    blunder rather than intel.
    """
    if not text.endswith(".") or not 2 <= text.count(".") <= 3:
        return None
    octets = text[:-1].split(".")
    if not all(o.isdecimal() and o.isascii() and (o == "0" or o[0] != "0") for o in octets):
        return None
    if any(int(o) > 255 for o in octets):
        return None
    padded = octets + ["0"] * (4 - len(octets))
    return ipaddress.IPv4Network(f"{'.'.join(padded)}/{8 * len(octets)}")


_new_object = object.__new__
_HOST_MASK_V4 = ipaddress.IPv4Network(0).netmask


def host_network_v4(value: int) -> ipaddress.IPv4Network:
    """`IPv4Network(value)` (a /32) built without its generic __init__.

    The stdlib constructor parses, validates and special-cases prefixes; for
    a host route from a 32-bit int it costs ~1.3 us, this ~0.4 us, and with
    hundreds of thousands of rows that is the parser's largest cost. The
    object has the same attributes `IPv4Network.__init__` sets for a /32
    (tests/test_intel_vuldb.py compares them field by field).
    """
    address = _new_object(ipaddress.IPv4Address)
    address._ip = value  # type: ignore[attr-defined]
    net: ipaddress.IPv4Network = _new_object(ipaddress.IPv4Network)
    net.network_address = address
    net.netmask = _HOST_MASK_V4
    net._prefixlen = 32  # type: ignore[attr-defined]
    # What __init__ sets for a /32: hosts() is the address itself.
    net.hosts = (address,).__iter__  # type: ignore[method-assign]
    return net


_IOC_FIELDS = ("id", "network", "hostname", "actor", "confidence", "source")


def _ioc_builder() -> Callable[
    [str, IPNetwork | None, str | None, str | None, Confidence, SourceRef], IOC
]:
    """A positional IOC constructor for the hot loop, twice as fast as `IOC(...)`.

    A frozen dataclass's __init__ goes through `object.__setattr__` per field;
    writing the slots through their descriptors gives the same object (equal,
    same hash and repr: tested). If the model's fields ever differ from the
    six expected here, the real constructor is used instead.
    """
    if tuple(f.name for f in dataclasses.fields(IOC)) != _IOC_FIELDS:
        return IOC
    new = object.__new__
    set_id, set_net, set_host, set_actor, set_conf, set_src = (
        getattr(IOC, name).__set__ for name in _IOC_FIELDS
    )

    def build(  # noqa: PLR0917 - mirrors the dataclass constructor
        ioc_id: str,
        network: IPNetwork | None,
        hostname: str | None,
        actor: str | None,
        confidence: Confidence,
        source: SourceRef,
    ) -> IOC:
        ioc: IOC = new(IOC)
        set_id(ioc, ioc_id)
        set_net(ioc, network)
        set_host(ioc, hostname)
        set_actor(ioc, actor)
        set_conf(ioc, confidence)
        set_src(ioc, source)
        return ioc

    return build


build_ioc = _ioc_builder()


def strip_code(cell: str) -> str:
    """Markdown code span -> its content: `` `a|b` `` -> 'a|b' (backslashes are literal)."""
    if len(cell) >= 2 and cell[0] == "`" and cell[-1] == "`":
        ticks = len(cell) - len(cell.lstrip("`"))
        ticks = min(ticks, len(cell) - len(cell.rstrip("`")))
        inner = cell[ticks : len(cell) - ticks]
        if ticks > 1 and len(inner) >= 2 and inner[0] == " " and inner[-1] == " ":
            inner = inner[1:-1]
        return inner
    return cell


@dataclass(slots=True)
class _Columns:
    """Column indexes of a table, from its header row."""

    names: list[str]
    width: int = 0
    host_at: int = 0
    assoc_at: int = 0

    def __post_init__(self) -> None:
        self.width = len(self.names)
        self.host_at = max(self.index("hostname"), 0)
        self.assoc_at = max(self.index("actor", "campaign"), 0)

    def index(self, *candidates: str) -> int:
        for name in candidates:
            if name in self.names:
                return self.names.index(name)
        return -1


@dataclass(slots=True)
class _PageBuilder:
    """Mutable accumulator for one page; frozen into a Campaign at the end."""

    path: str
    name: str = ""
    kind: CampaignKind | None = None
    slug: str = ""
    actors: list[Actor] = field(default_factory=list)
    iocs: list[IOC] = field(default_factory=list)
    techniques: list[Technique] = field(default_factory=list)
    ioas: list[IOA] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    countries: list[str] = field(default_factory=list)
    related: list[str] = field(default_factory=list)
    withheld: dict[str, int] = field(default_factory=dict)
    problems: list[LoadProblem] = field(default_factory=list)

    def warn(self, line: int, message: str) -> None:
        self.problems.append(LoadProblem(SourceRef(self.path, line), message, fatal=False))

    def confidence(self, text: str, line: int) -> Confidence:
        found = _CONFIDENCES.get(text)
        if found is None:
            found = _CONFIDENCES.get(text.capitalize())
        if found is None:
            self.warn(line, f"unknown confidence {text!r}, read as Low")
            return Confidence.LOW
        return found


def parse_vuldb(text: str, path: str) -> LoadResult:
    """Parse one VulDB CTI Markdown page. Never raises on any text."""
    page = _PageBuilder(path)
    page.slug = slugify(path.rsplit("/", 1)[-1].rsplit(".", 1)[0])
    lines = text.split("\n")
    section = ""
    columns: _Columns | None = None
    row_parsers: dict[str, _RowParser] = {
        "ioc": _ioc_row,
        "ttp": _ttp_row,
        "ioa": _ioa_row,
        "actor": _actor_row,
    }
    row_parser: _RowParser | None = None
    line_count = len(lines)
    index = 0
    while index < line_count:
        line = lines[index].strip()
        index += 1
        lineno = index
        if not line:
            continue
        first = line[0]
        if first.isdigit():
            # A table row (the common case, so tested first).
            if row_parser is None:
                if section not in ("literature", "license", "references"):
                    page.warn(lineno, "table row outside a table, ignored")
                continue
            _table_row(page, row_parser, line, lineno, columns)
            continue
        if first == "#":
            if line.startswith("## "):
                word = line[3:].split(" ", 1)[0].lower()
                section = _SECTIONS.get(word, "other")
                columns = None
                row_parser = None
            elif line.startswith("# ") and not page.name:
                page.name = _title_name(line, page, lineno)
                page.slug = slugify(page.name)
            continue
        if first == "*" and line.startswith("* "):
            _bullet(page, section, line[2:].strip(), lineno)
            continue
        if line.startswith("ID |") or line.startswith("ID|"):
            columns = _Columns([c.strip().lower() for c in line.split("|")])
            row_parser = row_parsers.get(section)
            if row_parser is _ioc_row:
                index = _ioc_table(page, lines, index, columns)
            continue
        if line.startswith("--"):
            continue  # header separator
        if line.startswith(_WITHHELD_PREFIXES) and _WITHHELD_MARK in line:
            _withheld(page, line, lineno)
            continue
        if page.kind is None and "known as" in line:
            if "of the campaign known as" in line:
                page.kind = CampaignKind.CAMPAIGN
            elif "of the actor known as" in line:
                page.kind = CampaignKind.ACTOR
    return _finish(page, text)


def _table_row(
    page: _PageBuilder, row_parser: _RowParser, line: str, lineno: int, columns: _Columns | None
) -> None:
    cells = line.split("|")
    if len(cells) < 3:
        page.warn(lineno, "malformed table row, ignored")
        return
    if cells[1].strip() == "...":
        return  # the truncation row; the count follows in "There are N more"
    try:
        row_parser(page, cells, line, lineno, columns)
    except (ValueError, IndexError) as exc:  # defensive: a row must not sink the page
        page.warn(lineno, f"unreadable table row: {exc}")


def _ioc_table(page: _PageBuilder, lines: list[str], index: int, columns: _Columns) -> int:
    """Read the IOC rows that follow a header; return the index of the first other line.

    The hot loop of the loader (about 430,000 rows in the public collection):
    well-formed rows with an IPv4 address are built inline with locals bound;
    anything unusual goes through `_ioc_row`, which warns precisely.
    """
    width, host_at, assoc_at = columns.width, columns.host_at, columns.assoc_at
    iocs = page.iocs
    append = iocs.append
    path, slug = page.path, page.slug
    actor_page = page.kind is CampaignKind.ACTOR
    page_actor = page.name or None
    related = page.related
    confidences = _CONFIDENCES
    empty = _EMPTY_CELLS
    empty_host = _EMPTY_HOSTS
    pton, af_inet, from_bytes = socket.inet_pton, socket.AF_INET, int.from_bytes
    new_ioc, new_ref, new_net = build_ioc, SourceRef, host_network_v4
    line_count = len(lines)
    while index < line_count:
        line = lines[index].strip()
        if not line or not line[0].isdigit():
            if line.startswith("--"):
                index += 1
                continue
            return index
        index += 1
        cells = line.split("|")
        if len(cells) != width:
            _table_row(page, _ioc_row, line, index, columns)
            continue
        ip_cell = cells[1].strip()
        if ip_cell[:1] == "[":
            end = ip_cell.find("](")
            ip_text = ip_cell[1:end] if end > 0 else ip_cell
        else:
            ip_text = ip_cell
        if ip_text == "...":
            continue
        confidence = confidences.get(cells[-1].strip())
        host = cells[host_at].strip() if host_at else "-"
        try:
            packed = pton(af_inet, ip_text)
        except (OSError, ValueError):
            packed = b""
        if not packed or confidence is None or " " in host or "\t" in host:
            _table_row(page, _ioc_row, line, index, columns)
            continue
        actor: str | None = None
        if assoc_at:
            assoc = cells[assoc_at].strip()
            if assoc not in empty:
                actor = assoc[1 : assoc.find("](")] if assoc[:1] == "[" and "](" in assoc else assoc
                if "&" in actor:
                    actor = html.unescape(actor)
        if actor_page:
            if actor is not None and actor not in related:
                related.append(actor)
            actor = page_actor
        append(
            new_ioc(
                f"{slug}:ioc:{len(iocs) + 1}",
                new_net(from_bytes(packed, "big")),
                None if host in empty_host else host,
                actor,
                confidence,
                new_ref(path, index),
            )
        )
    return index


def _title_name(line: str, page: _PageBuilder, lineno: int) -> str:
    title = line[2:].strip()
    if title.endswith(TITLE_SUFFIX):
        return title[: -len(TITLE_SUFFIX)].strip()
    page.warn(lineno, f"title lacks {TITLE_SUFFIX.strip()!r}; using it whole as the name")
    return title


def _bullet(page: _PageBuilder, section: str, item: str, lineno: int) -> None:
    if item == "..." or not item:
        return
    if section == "references":
        page.references.append(link_text(item))
    elif section == "country":
        page.countries.append(name_text(item))
    elif section == "campaign":
        page.related.append(name_text(item))
    elif section == "actor":
        # 2022 campaign pages list actors as bullets without a confidence; the
        # same pages republished as tables rate them High (SolarWinds: SilverFish).
        page.actors.append(Actor(name=name_text(item), confidence=Confidence.HIGH))


def _withheld(page: _PageBuilder, line: str, lineno: int) -> None:
    # "There are 8 more IOC items available. ..." -> ("ioc", 8)
    rest = line.split(" ", 2)[2]
    count_text, _, after = rest.partition(_WITHHELD_MARK)
    word = after.split(" ", 1)[0].lower()
    key = _SECTIONS.get(word)
    if not (count_text.isascii() and count_text.isdigit()) or key is None:
        page.warn(lineno, f"unrecognized withheld-items line: {line[:80]!r}")
        return
    count = int(count_text)
    page.withheld[key] = page.withheld.get(key, 0) + count
    page.warn(lineno, f"page withholds {count} more {word} items (truncated by VulDB)")


def _ioc_row(
    page: _PageBuilder, cells: list[str], line: str, lineno: int, columns: _Columns | None
) -> None:
    # Hot path (hundreds of thousands of rows): strip only the cells used.
    n = len(cells)
    # Standard layouts: ID | IP | Hostname | [Actor|Campaign |] Confidence
    host_at = 2 if n >= 4 else 0
    assoc_at = 3 if n >= 5 else 0
    if columns is not None and columns.width == n:
        host_at = columns.host_at
        assoc_at = columns.assoc_at
    ip_cell = cells[1].strip()
    host_cell = cells[host_at].strip() if host_at > 0 else "-"
    network: IPNetwork | None = None
    if ip_cell[:1] == "[":
        end = ip_cell.find("](")
        ip_text = ip_cell[1:end] if end > 0 else ip_cell
    else:
        ip_text = ip_cell
    if ip_text not in _EMPTY_CELLS:
        try:
            # Fast path for dotted quads; strict (no leading zeros, no short forms).
            network = host_network_v4(
                int.from_bytes(socket.inet_pton(socket.AF_INET, ip_text), "big")
            )
        except (OSError, ValueError):
            network = parse_ip_cell(ip_text)
    hostname = host_cell if host_cell not in _EMPTY_HOSTS else None
    if hostname is not None and (" " in hostname or "\t" in hostname):
        page.warn(lineno, f"hostname {hostname!r} has whitespace, ignored")
        hostname = None
    if network is None:
        if ip_text not in _EMPTY_CELLS:
            page.warn(lineno, f"invalid IP address {ip_text!r}")
        if hostname is None:
            page.warn(lineno, "IOC row has neither a valid address nor a hostname, skipped")
            return
    actor: str | None = None
    if assoc_at > 0:
        assoc_cell = cells[assoc_at].strip()
        if assoc_cell not in _EMPTY_CELLS:
            actor = name_text(assoc_cell)
    if page.kind is CampaignKind.ACTOR:
        # On actor pages the 4th column names a campaign of that actor.
        if actor is not None and actor not in page.related:
            page.related.append(actor)
        actor = page.name or None
    conf_text = cells[-1].strip()
    confidence = _CONFIDENCES.get(conf_text) or page.confidence(conf_text, lineno)
    page.iocs.append(
        IOC(
            id=f"{page.slug}:ioc:{len(page.iocs) + 1}",
            network=network,
            hostname=hostname,
            actor=actor,
            confidence=confidence,
            source=SourceRef(page.path, lineno),
        )
    )


def _ttp_row(
    page: _PageBuilder, cells: list[str], line: str, lineno: int, columns: _Columns | None
) -> None:
    cells = [c.strip() for c in cells]
    attack_id = link_text(cells[1])
    weak_at = columns.index("weakness") if columns is not None else -1
    desc_at = columns.index("description") if columns is not None else -1
    if columns is None or len(columns.names) != len(cells):
        weak_at = 2 if len(cells) >= 5 else -1
        desc_at = len(cells) - 2
    weakness = cells[weak_at] if weak_at > 0 else "-"
    description = cells[desc_at] if desc_at > 1 else ""
    cwes = tuple(
        w.strip() for w in weakness.split(",") if w.strip() and w.strip() not in _EMPTY_CELLS
    )
    if not _is_attack_id(attack_id):
        page.warn(lineno, f"unusual technique ID {attack_id!r}")
    page.techniques.append(
        Technique(
            attack_id=attack_id,
            cwes=cwes,
            description=description,
            confidence=page.confidence(cells[-1], lineno),
            source=SourceRef(page.path, lineno),
        )
    )


def _is_attack_id(text: str) -> bool:
    # T1234 or T1234.567
    if len(text) not in (5, 9) or text[0] != "T" or not text[1:5].isdigit():
        return False
    return len(text) == 5 or (text[5] == "." and text[6:].isdigit())


def _ioa_row(
    page: _PageBuilder, cells: list[str], line: str, lineno: int, columns: _Columns | None
) -> None:
    # The indicator may contain "|" (e.g. Pattern `|11|`): take the type after the
    # first separator and the confidence after the last; the indicator is between.
    first = line.index("|")
    second = line.find("|", first + 1)
    last = line.rfind("|")
    if second < 0 or last <= second:
        page.warn(lineno, "IOA row lacks an indicator or a confidence, skipped")
        return
    type_text = line[first + 1 : second].strip()
    # GFM lets a cell escape a pipe as "\|", even inside a code span.
    indicator = strip_code(line[second + 1 : last].strip()).replace("\\|", "|")
    conf_text = line[last + 1 :].strip()
    ioa_type = _IOA_TYPES.get(type_text.lower())
    if ioa_type is None:
        page.warn(lineno, f"unknown IOA type {type_text!r}, skipped")
        return
    if not indicator:
        page.warn(lineno, "empty IOA indicator, skipped")
        return
    confidence = page.confidence(conf_text, lineno)
    source = SourceRef(page.path, lineno)
    values = [indicator]
    if ioa_type is IOAType.ARGUMENT and "/" in indicator:
        # `a/b` names two arguments; matching must see both.
        values = [v.strip() for v in indicator.split("/") if v.strip()]
    slug = page.slug
    for value in values:
        page.ioas.append(
            IOA(
                id=f"{slug}:ioa:{len(page.ioas) + 1}",
                type=ioa_type,
                value=value,
                confidence=confidence,
                source=source,
            )
        )


def _actor_row(
    page: _PageBuilder, cells: list[str], line: str, lineno: int, columns: _Columns | None
) -> None:
    cells = [c.strip() for c in cells]
    name = name_text(cells[1])
    if name in _EMPTY_CELLS:
        return
    page.actors.append(Actor(name=name, confidence=page.confidence(cells[-1], lineno)))


def _finish(page: _PageBuilder, text: str) -> LoadResult:
    if not page.name:
        return LoadResult(
            problems=(
                *page.problems,
                LoadProblem(
                    SourceRef(page.path, 1),
                    f"not a VulDB CTI page: no '# NAME{TITLE_SUFFIX}' title",
                ),
            )
        )
    kind = page.kind
    if kind is None:
        page.warn(1, "page does not say 'actor known as' or 'campaign known as'; read as actor")
        kind = CampaignKind.ACTOR
    if not page.iocs and not page.ioas and not page.techniques:
        page.warn(1, "page has no IOC, TTP or IOA rows")
    warnings = tuple(p.message if not p.source.line else str(p) for p in page.problems)
    campaign = Campaign(
        name=page.name,
        kind=kind,
        source=page.path,
        content_hash=hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(),
        actors=tuple(page.actors),
        iocs=tuple(page.iocs),
        techniques=tuple(page.techniques),
        ioas=tuple(page.ioas),
        references=tuple(page.references),
        countries=tuple(page.countries),
        related_campaigns=tuple(page.related),
        withheld=tuple(sorted(page.withheld.items())),
        warnings=warnings,
    )
    return LoadResult(campaigns=(campaign,), problems=tuple(page.problems))
