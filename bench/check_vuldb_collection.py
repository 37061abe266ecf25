"""Check the VulDB parser against a directory of real VulDB CTI pages.

For every `*.md` page under DIR (recursively; `NOTICE.md` skipped) compares
what `parse_vuldb` read with an independent count done by a different,
deliberately naive method: a regex over lines `<digits> | ...` per `## `
section (rows whose second cell is `...` are the truncation marker) and the
`There are N more X items` lines. Reports every page with a fatal problem, a
warning other than the withheld-items ones, or a count mismatch; prints
totals. Exit status 1 if any page is reported.

    .venv/bin/python bench/check_vuldb_collection.py /tmp/vuldb-sample
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.intel.vuldb import parse_vuldb

_ROW = re.compile(r"^\s*\|?\s*\d+\s*\|(.*)$")
_HEADER = re.compile(r"^\s*\|?\s*ID\s*\|(.*)$")
_WITHHELD = re.compile(r"^\s*There (?:are|is) ([\d,.' ]+?) more (\w+) items?\b")
# A table is classified by its header's second column, not by the section heading.
_TABLE_KEYS = {
    "ip address": "ioc",
    "ip": "ioc",
    "technique": "ttp",
    "type": "ioa",
    "actor": "actor",
}
_WITHHELD_KEYS = {
    "ioc": "ioc", "ttp": "ttp", "ioa": "ioa", "actors": "actor", "actor": "actor",
    "countries": "country", "country": "country", "campaigns": "campaign",
    "campaign": "campaign",
}  # fmt: skip
# A plain DNS name (labels of letters, digits, '-', '_'); anything else is reported.
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_-]{1,63})*\.?$"
)


# Addresses a gateway must never drop: read as IOCs they would cut off local hosts.
_LOCAL_NETS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/3", "::/127", "fe80::/10",
        "fc00::/7", "ff00::/8",
    )
)  # fmt: skip


@dataclass(slots=True)
class PageCount:
    rows: dict[str, int] = field(default_factory=dict)
    withheld: dict[str, int] = field(default_factory=dict)


def naive_count(text: str) -> PageCount:
    """Rows per table kind and withheld counts, without the parser's code.

    Every `<digits> |` line counts, wherever it is: rows before any table
    header or under an unknown header are counted as "other" (the parser
    reads none of them, so a real page must have none outside References).
    """
    count = PageCount()
    table = ""
    section = ""
    for line in text.splitlines():
        if line.startswith("## "):
            words = line[3:].split()
            section = words[0].lower() if words else ""
            table = ""
            continue
        header = _HEADER.match(line)
        if header:
            second = header.group(1).split("|")[0].strip().lower()
            table = _TABLE_KEYS.get(second, "other")
            continue
        if section == "actors" and line.startswith("* ") and line[2:].strip() not in ("", "..."):
            count.rows["actor"] = count.rows.get("actor", 0) + 1  # 2022 pages: bullets
            continue
        row = _ROW.match(line)
        if row:
            cells = row.group(1).split("|")
            if cells[0].strip() == "...":
                continue
            key = table or ("" if section in ("references", "literature", "license") else "other")
            if key:
                count.rows[key] = count.rows.get(key, 0) + 1
            continue
        held = _WITHHELD.match(line)
        if held:
            number = int(re.sub(r"[,.' ]", "", held.group(1)))
            key = _WITHHELD_KEYS.get(held.group(2).lower(), held.group(2).lower())
            count.withheld[key] = count.withheld.get(key, 0) + number
    return count


@dataclass(slots=True)
class Totals:
    pages: int = 0
    reported: int = 0
    notes: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)


def check_page(path: Path, totals: Totals) -> list[str]:
    """Problems found on one page (empty if the parser agrees with the naive count)."""
    text = path.read_text(encoding="utf-8", errors="surrogateescape")
    result = parse_vuldb(text, str(path))
    out = [f"fatal: {p}" for p in result.problems if p.fatal]
    out += [
        f"warning: {p}"
        for p in result.problems
        if not p.fatal and not p.message.startswith("page withholds")
    ]
    if not result.campaigns:
        return out or ["no campaign"]
    (campaign,) = result.campaigns
    naive = naive_count(text)
    # IOAs: an Argument `a/b` yields two entries on one line; compare lines.
    parsed = {
        "ioc": len({i.source.line for i in campaign.iocs}),
        "ttp": len({t.source.line for t in campaign.techniques}),
        "ioa": len({i.source.line for i in campaign.ioas}),
        "actor": len(campaign.actors),
    }
    for key, got in parsed.items():
        want = naive.rows.get(key, 0)
        totals.rows[key] = totals.rows.get(key, 0) + want
        if got != want:
            out.append(f"{key} rows: parser {got}, naive count {want}")
    if naive.rows.get("other"):
        out.append(f"{naive.rows['other']} table rows outside IOC/TTP/IOA/Actors tables")
    odd_hosts = sorted(
        {i.hostname for i in campaign.iocs if i.hostname and not _HOSTNAME.match(i.hostname)}
    )
    if odd_hosts:
        out.append(f"hostnames that are not DNS names: {odd_hosts[:5]}")
    for ioc in campaign.iocs:
        net = ioc.network
        if net is not None and any(
            net.version == local.version and net.subnet_of(local)  # type: ignore[arg-type]
            for local in _LOCAL_NETS
        ):
            totals.notes.append(f"{path}:{ioc.source.line}: local/private address IOC {net}")
    if len(campaign.iocs) != parsed["ioc"]:
        out.append(f"ioc: {len(campaign.iocs)} entries on {parsed['ioc']} lines")
    if dict(campaign.withheld) != naive.withheld:
        out.append(f"withheld: parser {dict(campaign.withheld)}, naive {naive.withheld}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("directory", type=Path)
    args = parser.parse_args()
    totals = Totals()
    pages = sorted(p for p in args.directory.rglob("*.md") if p.name != "NOTICE.md")
    for path in pages:
        totals.pages += 1
        problems = check_page(path, totals)
        if problems:
            totals.reported += 1
            print(f"== {path}")
            for problem in problems:
                print(f"   {problem}")
    for note in totals.notes:
        print(f"note: {note}")
    rows = ", ".join(f"{k} {v}" for k, v in sorted(totals.rows.items()))
    print(f"pages {totals.pages}, reported {totals.reported}; rows compared: {rows}")
    return 1 if totals.reported else 0


if __name__ == "__main__":
    sys.exit(main())
