"""Regenerate stix-rusty-flag.json with the stix2 library (fixed IDs and times).

Run: .venv/bin/python tests/data/intel/make_stix_fixture.py
"""

from __future__ import annotations

from pathlib import Path

import stix2

CREATED = "2024-03-01T00:00:00.000Z"


def build() -> stix2.Bundle:
    campaign = stix2.Campaign(
        id="campaign--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
        created=CREATED,
        modified=CREATED,
        name="Rusty Flag",
        description="Campaign against Azerbaijani targets (Deep Instinct).",
        external_references=[
            {
                "source_name": "deepinstinct",
                "url": "https://www.deepinstinct.com/blog/operation-rusty-flag-a-malicious-campaign-against-azerbaijanian-targets",
            }
        ],
    )
    sqli = stix2.AttackPattern(
        id="attack-pattern--0f20e3cb-245b-4a61-8a91-2d93f7cb0e9b",
        created=CREATED,
        modified=CREATED,
        name="SQL Injection",
        external_references=[
            {"source_name": "mitre-attack", "external_id": "T1505"},
            {"source_name": "cwe", "external_id": "CWE-89"},
        ],
    )
    xss = stix2.AttackPattern(
        id="attack-pattern--7b8f7a4e-55f5-4b0b-9a3e-0e4b7f3e8c11",
        created=CREATED,
        modified=CREATED,
        name="Basic Cross Site Scripting",
        external_references=[
            {"source_name": "mitre-attack", "external_id": "T1059.007"},
            {"source_name": "cwe", "external_id": "CWE-79"},
        ],
    )
    ip = stix2.Indicator(
        id="indicator--a932fcc6-e032-476c-826f-cb970a5a1ade",
        created=CREATED,
        modified=CREATED,
        name="Rusty Flag C2",
        pattern="[ipv4-addr:value = '78.135.73.140']",
        pattern_type="stix",
        valid_from=CREATED,
        confidence=85,
    )
    net6 = stix2.Indicator(
        id="indicator--2f0b8d4e-3c1e-4a55-9a57-7d5d1f5a0b21",
        created=CREATED,
        modified=CREATED,
        pattern="[ipv6-addr:value = '2001:db8:bad::/48'] OR [ipv4-addr:value = '198.51.100.0/24']",
        pattern_type="stix",
        valid_from=CREATED,
        confidence=50,
    )
    domain = stix2.Indicator(
        id="indicator--5c2a4b8e-8f61-4f4e-b0e4-6d9f0c3a7e44",
        created=CREATED,
        modified=CREATED,
        pattern="[domain-name:value = 'Update.Rusty-Flag.example']",
        pattern_type="stix",
        valid_from=CREATED,
        confidence=20,
    )
    url = stix2.Indicator(
        id="indicator--c1f4e7a2-9b3d-4e8f-a6c5-1d2e3f4a5b6c",
        created=CREATED,
        modified=CREATED,
        pattern="[url:value = 'http://metrics.rusty-flag.example/api/totals/last/1']",
        pattern_type="stix",
        valid_from=CREATED,
    )
    unused = stix2.Indicator(
        id="indicator--d2e5f8b3-0c4e-4f9a-b7d6-2e3f4a5b6c7d",
        created=CREATED,
        modified=CREATED,
        pattern="[file:hashes.'SHA-256' = "
        "'aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f']",
        pattern_type="stix",
        valid_from=CREATED,
    )
    relationships = [
        stix2.Relationship(
            id=f"relationship--00000000-0000-4000-8000-00000000000{n}",
            created=CREATED,
            modified=CREATED,
            relationship_type="indicates",
            source_ref=src,
            target_ref=dst,
        )
        for n, (src, dst) in enumerate(
            [
                (ip.id, campaign.id),
                (net6.id, campaign.id),
                (domain.id, campaign.id),
                (url.id, sqli.id),
            ],
            start=1,
        )
    ]
    return stix2.Bundle(
        campaign,
        sqli,
        xss,
        ip,
        net6,
        domain,
        url,
        unused,
        *relationships,
        id="bundle--3b1f0c2e-6a1d-4f7e-9c55-8d2b7a0e4f10",
        allow_custom=False,
    )


if __name__ == "__main__":
    out = Path(__file__).with_name("stix-rusty-flag.json")
    out.write_text(build().serialize(pretty=True) + "\n")
    print(out)
