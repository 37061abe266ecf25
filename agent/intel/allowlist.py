"""What intel may never make the gateway block: local and special ranges, operator allowlists.

Real pages list private addresses (10.0.0.211 marked High), shared cloud/CDN
infrastructure and reverse-DNS names such as `localhost` or `1drv.ms`.
Enforcing those would cut a gateway off its own LAN or flag everyone's
traffic, so such indicators are taken out before the snapshot is built,
each with a located warning saying why.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from agent.intel.model import IOA, IOC, Campaign, IOAType, IPNetwork, LoadProblem

# Loopback, private, link-local, CGNAT, unspecified, multicast, broadcast; v6 likewise.
DEFAULT_NEVER_BLOCK: tuple[str, ...] = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "255.255.255.255/32",
    "::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8",
)  # fmt: skip
# Names that only ever mean "this host" or a local zone.
LOCAL_HOSTNAME_SUFFIXES: tuple[str, ...] = ("localhost", "local", "arpa", "internal", "lan")


@dataclass(frozen=True, slots=True)
class Allowlist:
    networks: tuple[IPNetwork, ...]
    hostname_suffixes: tuple[str, ...]

    @classmethod
    def build(cls, networks: Sequence[str], hostnames: Sequence[str]) -> Allowlist:
        parsed = tuple(ipaddress.ip_network(n, strict=False) for n in networks)
        suffixes = tuple(h.strip().strip(".").lower() for h in hostnames if h.strip(" ."))
        return cls(parsed, suffixes + LOCAL_HOSTNAME_SUFFIXES)

    def network_reason(self, network: IPNetwork) -> str | None:
        for allowed in self.networks:
            if allowed.version == network.version and allowed.overlaps(network):
                return f"{network} overlaps {allowed}, which is never blocked (intel.never_block)"
        return None

    def hostname_reason(self, hostname: str) -> str | None:
        name = hostname.strip(".").lower()
        if "." not in name:
            return f"hostname {hostname!r} is a single label: not matched"
        for suffix in self.hostname_suffixes:
            if name == suffix or name.endswith("." + suffix):
                return f"hostname {hostname!r} is allowlisted ({suffix}): not matched"
        return None


def _filter_ioc(ioc: IOC, allow: Allowlist) -> tuple[IOC | None, list[str]]:
    reasons: list[str] = []
    network, hostname = ioc.network, ioc.hostname
    if network is not None and (why := allow.network_reason(network)) is not None:
        reasons.append(why)
        network = None
    if hostname and (why := allow.hostname_reason(hostname)) is not None:
        reasons.append(why)
        hostname = None
    if not reasons:
        return ioc, reasons
    if network is None and not hostname:
        return None, reasons
    return dataclasses.replace(ioc, network=network, hostname=hostname), reasons


def _too_generic(ioa: IOA) -> str | None:
    """An IOA that would match (nearly) every request, e.g. the File IOA `//` (MyKings)."""
    if ioa.type in (IOAType.FILE, IOAType.LIBRARY) and not any(c.isalnum() for c in ioa.value):
        return f"{ioa.type.value} IOA {ioa.value!r} would match nearly every request: not matched"
    if not ioa.value.strip():
        return f"{ioa.type.value} IOA is empty: not matched"
    return None


def apply_allowlist(
    campaigns: Sequence[Campaign], allow: Allowlist
) -> tuple[tuple[Campaign, ...], tuple[LoadProblem, ...]]:
    """Campaigns without what must never be blocked, and a warning per indicator taken out."""
    out: list[Campaign] = []
    problems: list[LoadProblem] = []
    for campaign in campaigns:
        kept: list[IOC] = []
        changed = False
        for ioc in campaign.iocs:
            filtered, reasons = _filter_ioc(ioc, allow)
            for reason in reasons:
                problems.append(LoadProblem(ioc.source, f"{campaign.name}: {reason}", fatal=False))
            changed = changed or filtered is not ioc
            if filtered is not None:
                kept.append(filtered)
        ioas: list[IOA] = []
        for ioa in campaign.ioas:
            why = _too_generic(ioa)
            if why is None:
                ioas.append(ioa)
            else:
                problems.append(LoadProblem(ioa.source, f"{campaign.name}: {why}", fatal=False))
                changed = True
        out.append(
            dataclasses.replace(campaign, iocs=tuple(kept), ioas=tuple(ioas))
            if changed
            else campaign
        )
    return tuple(out), tuple(problems)
