"""Plain blocklists (FireHOL, IPsum, hand-kept) -> one `Campaign` per file.

One IP, CIDR or hostname per line; `#` and `;` start comments (whole-line or
trailing); IPsum lines are `IP<TAB>count` (the count is ignored). The campaign
is named after the file stem. Pure; bad lines are warnings with line numbers.
"""

from __future__ import annotations

import hashlib
import ipaddress

from agent.intel.model import (
    IOC,
    Campaign,
    CampaignKind,
    Confidence,
    LoadProblem,
    LoadResult,
    SourceRef,
)
from agent.intel.vuldb import slugify

_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-._")


def is_hostname(text: str) -> bool:
    """A plausible DNS name: dotted labels of letters, digits, '-', '_' (<= 253 chars)."""
    name = text.lower().rstrip(".")
    if not name or len(name) > 253 or "." not in name or not set(name) <= _HOST_CHARS:
        return False
    labels = name.split(".")
    # A numeric last label is a mistyped IP address, never a TLD.
    return not labels[-1].isdigit() and all(0 < len(label) <= 63 for label in labels)


def parse_plainlist(text: str, path: str) -> LoadResult:
    stem = path.rsplit("/", 1)[-1]
    name = stem.rsplit(".", 1)[0] if "." in stem else stem
    slug = slugify(name)
    iocs: list[IOC] = []
    problems: list[LoadProblem] = []
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw
        for mark in ("#", ";"):
            cut = line.find(mark)
            if cut >= 0:
                line = line[:cut]
        fields = line.split()
        if not fields:
            continue
        value = fields[0]
        source = SourceRef(path, lineno)
        try:
            network = ipaddress.ip_network(value, strict=False)
        except ValueError:
            network = None
        if network is None and not is_hostname(value):
            message = f"not an IP, CIDR or hostname: {raw.strip()[:80]!r}"
            problems.append(LoadProblem(source, message, fatal=False))
            continue
        if len(fields) > 1 and not (len(fields) == 2 and fields[1].isascii() and fields[1].isdigit()):
            problems.append(LoadProblem(source, "extra text after the indicator ignored", False))
        iocs.append(
            IOC(
                id=f"{slug}:ioc:{len(iocs) + 1}",
                network=network,
                hostname=None if network is not None else value.lower().rstrip("."),
                actor=None,
                confidence=Confidence.HIGH,
                source=source,
            )
        )
    if not iocs:
        problems.append(LoadProblem(SourceRef(path), "list has no indicator", False))
    campaign = Campaign(
        name=name,
        kind=CampaignKind.CAMPAIGN,
        source=path,
        content_hash=hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(),
        iocs=tuple(iocs),
        warnings=tuple(str(p) for p in problems),
    )
    return LoadResult(campaigns=(campaign,), problems=tuple(problems))
