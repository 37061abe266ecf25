"""The decision core end to end: packets in, decisions and their events out."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from agent.config import load_settings
from agent.core.decision import Decision, PacketMeta, Verdict
from agent.core.engine import DecisionCore
from agent.events import decision_event
from agent.intel.loading import load_intel
from agent.wiring import build_core
from tests.helpers import REPO, assert_valid_event, core_with_actions, default_core

CLIENT, SERVER, IOC = "10.211.1.2", "10.211.2.2", "78.135.73.140"


def _meta() -> PacketMeta:
    return PacketMeta(timestamp=1_700_000_000.0)


def _handshake(core: DecisionCore, sport: int, dport: int = 80) -> int:
    core.decide(
        bytes(IP(src=CLIENT, dst=SERVER) / TCP(sport=sport, dport=dport, flags="S", seq=100)),
        _meta(),
    )
    core.decide(
        bytes(
            IP(src=SERVER, dst=CLIENT) / TCP(sport=dport, dport=sport, flags="SA", seq=900, ack=101)
        ),
        _meta(),
    )
    return 101


def _send_stream(
    core: DecisionCore, data: bytes, cuts: list[int], sport: int, dport: int = 80
) -> list[Decision]:
    seq = _handshake(core, sport, dport)
    bounds = [0, *sorted(set(cuts)), len(data)]
    decisions = []
    for start, end in itertools.pairwise(bounds):
        if start == end:
            continue
        packet = (
            IP(src=CLIENT, dst=SERVER)
            / TCP(sport=sport, dport=dport, flags="PA", seq=seq + start, ack=901)
            / Raw(data[start:end])
        )
        decisions.append(core.decide(bytes(packet), _meta()))
    return decisions


def _summary(
    decisions: list[Decision],
) -> list[tuple[str, tuple[tuple[str, str, str | None], ...]]]:
    return [
        (
            d.verdict.value,
            tuple(
                sorted(
                    (
                        r.evidence.kind.value,
                        r.evidence.where.value,
                        r.technique.attack_id if r.technique else None,
                    )
                    for r in d.reasons
                )
            ),
        )
        for d in decisions
        if d.reasons or d.verdict != Verdict.ACCEPT
    ]


def _event_ok(decision: Decision) -> dict[str, object]:
    event = decision_event(decision, timestamp=1.0, source="replay", mode="enforce", packet_no=1)
    assert_valid_event(event)
    return event


def test_ioc_address_dropped_both_directions_v4() -> None:
    core = default_core()
    out = core.decide(bytes(IP(src=CLIENT, dst=IOC) / ICMP()), _meta())
    back = core.decide(bytes(IP(src=IOC, dst=CLIENT) / UDP(sport=53, dport=5000)), _meta())
    assert out.verdict == Verdict.DROP and back.verdict == Verdict.DROP
    assert out.reasons[0].evidence.where.value == "dest_ip"
    assert back.reasons[0].evidence.where.value == "src_ip"
    event = _event_ok(out)
    reason = event["reasons"][0]  # type: ignore[index]
    assert reason["campaign"] == "Rusty Flag"
    assert reason["indicator"]["value"] == IOC
    assert reason["indicator"]["confidence"] == "High"


def test_dry_run_turns_drop_into_would_drop() -> None:
    core = default_core(mode="dry-run")
    decision = core.decide(bytes(IP(src=CLIENT, dst=IOC) / TCP(dport=80, flags="S")), _meta())
    assert decision.verdict == Verdict.WOULD_DROP
    assert not decision.block_flow


def test_benign_traffic_accepted() -> None:
    core = default_core()
    data = b"GET /api/totals/last/10 HTTP/1.1\r\nHost: metrics.lab\r\n\r\nGET /?q=hello HTTP/1.1\r\nHost: metrics.lab\r\n\r\n"
    decisions = _send_stream(core, data, [], 40001)
    assert all(d.verdict == Verdict.ACCEPT and not d.reasons for d in decisions)
    v6 = core.decide(bytes(IPv6(src="fd00::1", dst="fd00::2") / UDP(sport=1, dport=2)), _meta())
    assert v6.verdict == Verdict.ACCEPT


def test_sqli_in_path_segment_flagged_with_technique() -> None:
    core = default_core()
    data = b"GET /api/totals/last/1%20UNION%20SELECT%20sql%20FROM%20sqlite_master-- HTTP/1.1\r\nHost: x\r\n\r\n"
    (decision,) = _send_stream(core, data, [], 40002)
    assert decision.verdict == Verdict.FLAG
    kinds = {(r.evidence.kind.value, r.evidence.where.value) for r in decision.reasons}
    assert ("sqli", "path") in kinds and ("type_violation", "path") in kinds
    sqli = next(r for r in decision.reasons if r.evidence.kind.value == "sqli")
    assert (
        sqli.technique is not None
        and sqli.technique.attack_id == "T1505"
        and sqli.technique.cwes == ("CWE-89",)
    )
    assert sqli.evidence.name == "num"
    assert decision.http is not None and decision.http.method == "GET"
    _event_ok(decision)


def test_xss_in_query_maps_to_t1059_007() -> None:
    core = default_core()
    data = (
        b"GET /api/diffs?num=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    (decision,) = _send_stream(core, data, [], 40003)
    xss = [r for r in decision.reasons if r.evidence.kind.value == "xss"]
    assert xss and xss[0].technique is not None and xss[0].technique.attack_id == "T1059.007"


def test_srv_go_touch_maps_to_t1222() -> None:
    core = default_core()
    data = b"GET /a/../metrics-ui//server/./srv.go HTTP/1.1\r\nHost: x\r\n\r\n"
    (decision,) = _send_stream(core, data, [], 40004)
    file_reasons = [r for r in decision.reasons if r.evidence.kind.value == "file"]
    assert file_reasons and file_reasons[0].technique is not None
    assert file_reasons[0].technique.attack_id == "T1222"
    assert decision.verdict == Verdict.FLAG


def test_srv_go_segment_boundary_not_matched_inside_other_names() -> None:
    core = default_core()
    data = b"GET /metrics-ui/server/srv.golden HTTP/1.1\r\nHost: x\r\n\r\n"
    (decision,) = _send_stream(core, data, [], 40005)
    assert not decision.reasons


def test_integer_num_everywhere_is_clean() -> None:
    core = default_core()
    data = (
        b"POST /api/totals?num=7 HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 6\r\nCookie: num=12\r\n\r\nnum=99"
    )
    decisions = _send_stream(core, data, [], 40006)
    assert all(not d.reasons for d in decisions)


def test_split_at_every_point_gives_same_decision() -> None:
    data = b"POST /api/totals HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 27\r\n\r\nnum=1%20or%20sleep(5)%3D0--"
    reference = _summary(_send_stream(default_core(), data, [], 41000))
    assert reference and reference[0][0] == "flag"
    rng = random.Random(7)
    for index, cut in enumerate(range(1, len(data))):
        assert _summary(_send_stream(default_core(), data, [cut], 41001 + index)) == reference
    for index in range(30):
        cuts = rng.sample(range(1, len(data)), rng.randint(2, 12))
        assert _summary(_send_stream(default_core(), data, cuts, 42000 + index)) == reference
    # Byte by byte.
    assert (
        _summary(_send_stream(default_core(), data, list(range(1, len(data))), 43000)) == reference
    )


def test_http_drop_policy_blocks_flow_after_benign_keepalive() -> None:
    core = core_with_actions(sqli="drop")
    benign = b"GET /api/totals/last/3 HTTP/1.1\r\nHost: x\r\n\r\n"
    attack = b"GET /api/totals/last/3%20or%201=1 HTTP/1.1\r\nHost: x\r\n\r\n"
    first, second = _send_stream(core, benign + attack, [len(benign)], 44000)
    assert first.verdict == Verdict.ACCEPT
    assert second.verdict == Verdict.DROP and second.block_flow
    later = core.decide(
        bytes(
            IP(src=CLIENT, dst=SERVER)
            / TCP(sport=44000, dport=80, flags="PA", seq=101 + len(benign) + len(attack), ack=901)
            / Raw(b"GET / HTTP/1.1\r\n\r\n")
        ),
        _meta(),
    )
    assert later.verdict == Verdict.DROP and not later.reasons


def test_malformed_packets_are_data() -> None:
    core = default_core()
    rng = random.Random(1)
    for _ in range(500):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80)))
        decision = core.decide(blob, _meta())
        assert isinstance(decision, Decision)
    failure = core.decide(b"\x45\x00", _meta())
    assert failure.decode_failure is not None
    _event_ok(failure)


# -- inspection depth: keep-alive padding cannot hide a later request ---------------------


def _segment(sport: int, seq: int, payload: bytes) -> bytes:
    return bytes(
        IP(src=CLIENT, dst=SERVER)
        / TCP(sport=sport, dport=80, flags="PA", seq=seq, ack=901)
        / Raw(payload)
    )


def _reasons_kinds(decision: Decision) -> set[str]:
    return {r.evidence.kind.value for r in decision.reasons}


ATTACK = b"GET /api/totals/last/1%20or%201=1 HTTP/1.1\r\nHost: x\r\n\r\n"


def test_keepalive_padding_past_depth_is_still_inspected_in_replay() -> None:
    core = default_core()
    padding = b"GET /?" + b"p" * 900 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    count = 2 * core.limits.inspect_depth // len(padding) + 2  # twice the depth of benign requests
    decisions = _send_stream(
        core, padding * count + ATTACK, [len(padding) * i for i in range(1, count + 1)], 45000
    )
    assert all(not d.reasons for d in decisions[:-1])
    assert {"sqli", "type_violation"} <= _reasons_kinds(decisions[-1])


def test_request_after_an_oversized_request_is_inspected() -> None:
    core = default_core()
    depth = core.limits.inspect_depth
    body = b"a" * (depth + 5000)
    upload = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    seq = _handshake(core, 45001)
    offset = 0
    for start in range(0, len(upload), 1400):
        core.decide(_segment(45001, seq + start, upload[start : start + 1400]), _meta())
    offset = len(upload)
    decision = core.decide(_segment(45001, seq + offset, ATTACK), _meta())
    assert {"sqli", "type_violation"} <= _reasons_kinds(decision)


def test_past_depth_request_start_after_a_gap_resyncs() -> None:
    # Live: past the kernel's depth only request starts are queued; the bytes between are not.
    core = default_core()
    seq = _handshake(core, 45002)
    first = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    assert not core.decide(_segment(45002, seq, first), _meta()).reasons
    later = seq + len(first) + 50_000  # 50 kB the inspector never saw
    meta = PacketMeta(timestamp=1_700_000_000.0, past_depth=True)
    decision = core.decide(_segment(45002, later, ATTACK), meta)
    assert {"sqli", "type_violation"} <= _reasons_kinds(decision)
    # A tiny segment that starts nothing is the shape of a split request line.
    tiny = core.decide(_segment(45002, later + len(ATTACK) + 9000, b"GE"), meta)
    assert tiny.verdict == Verdict.FLAG
    assert tiny.anomalies and tiny.anomalies[0][0].value == "past_depth_fragment"
    _event_ok(tiny)


def test_file_ioa_with_a_query_matches_on_parameter_boundaries(tmp_path: Path) -> None:
    page = (REPO / "configs" / "campaigns" / "rusty-flag.md").read_text()
    page = page.replace(
        "2 | Argument | `num` | Low",
        "2 | Argument | `num` | Low\n3 | File | `/ajax.php?action=login` | High",
    )
    (tmp_path / "p.md").write_text(page)
    (tmp_path / "agent.toml").write_text("[intel]\nsources = []\n")
    settings = load_settings(tmp_path / "agent.toml")
    load = load_intel(settings, [tmp_path / "p.md"])
    assert load.snapshot is not None
    core = build_core(settings, load.snapshot)
    cases = {
        b"/ajax.php?action=login&u=1": True,
        b"/x/ajax.php?action=login": True,
        b"/ajax.php?action=logout": False,
    }
    for index, (target, expected) in enumerate(cases.items()):
        (decision,) = _send_stream(
            core, b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target, [], 46000 + index
        )
        assert ("file" in _reasons_kinds(decision)) is expected, target


def test_num_as_an_object_is_a_type_violation() -> None:
    # PHP/qs hand the handler an object for num[x]=; mysqljs turns one into SQL.
    core = default_core()
    query = b"GET /x?num[x]=1%20or%201=1&num[y]=5 HTTP/1.1\r\nHost: x\r\n\r\n"
    body = b'{"num": {"num": 1}}'
    json_post = (
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    for port, data in ((40101, query), (40102, json_post)):
        (decision,) = _send_stream(core, data, [], port)
        assert decision.verdict == Verdict.FLAG
        kinds = {r.evidence.kind.value for r in decision.reasons}
        assert "type_violation" in kinds
        assert all(r.evidence.name == "num" for r in decision.reasons)
        _event_ok(decision)
    (sqli,) = [
        r
        for r in _send_stream(core, query, [], 40103)[0].reasons
        if r.evidence.kind.value == "sqli"
    ]
    assert sqli.evidence.value == "1 or 1=1"
    # An object whose members are not number-typed arguments stays clean.
    clean = b"GET /x?a[num]=5&page[size]=10 HTTP/1.1\r\nHost: x\r\n\r\n"
    assert not _send_stream(core, clean, [], 40104)[0].reasons


def test_srv_go_windows_aliases_match() -> None:
    # Windows file systems drop trailing dots and spaces; ::$DATA is the file's content.
    core = default_core()
    for port, target in enumerate(
        (b"srv.go.", b"srv.go%20", b"srv.go.%20.", b"SRV.GO::$DATA", b"srv.go::$DATA/x"), 40110
    ):
        data = b"GET /metrics-ui/server/" + target + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        (decision,) = _send_stream(core, data, [], port)
        assert [r.evidence.kind.value for r in decision.reasons] == ["file"], target
    for port, target in enumerate((b"srv.go.bak", b"srv.go:x", b"srv.go.old."), 40120):
        data = b"GET /metrics-ui/server/" + target + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        (decision,) = _send_stream(core, data, [], port)
        assert not decision.reasons, target


def test_head_longer_than_the_depth_is_an_anomaly() -> None:
    # The end of a padded head (query, cookie) lies past the depth: flagged, not silent.
    core = default_core()
    pad = b"A" * (core.limits.inspect_depth + 1000)
    cookie = b"GET /x HTTP/1.1\r\nHost: x\r\nX-Pad: " + pad + b"\r\nCookie: num=1'--\r\n\r\n"
    query = b"GET /x?pad=" + pad + b"&num=1%20or%201=1 HTTP/1.1\r\nHost: x\r\n\r\n"
    for port, data in ((45010, cookie), (45011, query)):
        decisions = _send_stream(core, data, list(range(1400, len(data), 1400)), port)
        flagged = [d for d in decisions if d.verdict != Verdict.ACCEPT]
        assert [a[0].value for d in flagged for a in d.anomalies] == ["depth_exceeded"]
        _event_ok(flagged[0])
    # A body longer than the depth is normal (uploads): no anomaly.
    body = b"a" * (core.limits.inspect_depth + 1000)
    upload = b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    decisions = _send_stream(core, upload, list(range(1400, len(upload), 1400)), 45012)
    assert all(d.verdict == Verdict.ACCEPT and not d.anomalies for d in decisions)


def test_head_split_past_the_depth_is_an_anomaly() -> None:
    # Live, past the depth, "GET " alone is queued but a rest of 8+ bytes is not.
    core = default_core()
    seq = _handshake(core, 45013)
    first = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    assert not core.decide(_segment(45013, seq, first), _meta()).reasons
    later = seq + len(first) + 50_000
    meta = PacketMeta(timestamp=1_700_000_000.0, past_depth=True)
    split = core.decide(_segment(45013, later, b"GET "), meta)
    assert split.verdict == Verdict.FLAG
    assert [a[0].value for a in split.anomalies] == ["past_depth_fragment"]
    _event_ok(split)
    # A whole head in its segment past the depth is inspected: no anomaly.
    whole = b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"
    decision = core.decide(_segment(45013, later + 60_000, whole), meta)
    assert decision.verdict == Verdict.ACCEPT and not decision.anomalies


def test_http09_request_is_inspected_and_its_headers_still_are() -> None:
    core = default_core()
    (line,) = _send_stream(core, b"GET /api/totals/last/1%20or%201=1\r\n", [], 45020)
    assert {"sqli", "type_violation"} <= _reasons_kinds(line)
    assert line.verdict == Verdict.FLAG and line.anomalies
    _event_ok(line)
    # A version-less line followed by headers: the headers are inspected when they come.
    data = b"GET /x\r\nCookie: num=1'or'1'='1\r\n\r\n"
    decisions = _send_stream(core, data, [8], 45021)
    assert "sqli" in _reasons_kinds(decisions[-1])


def _past_depth_run(parts: list[tuple[bytes, bool]], sport: int) -> list[Decision]:
    """A keep-alive flow past the kernel depth: only (payload, queued=True) parts arrive."""
    core = default_core()
    seq = _handshake(core, sport)
    first = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    core.decide(_segment(sport, seq, first), _meta())
    position = seq + len(first) + 50_000
    meta = PacketMeta(timestamp=1_700_000_000.0, past_depth=True)
    decisions = []
    for payload, queued in parts:
        if queued:
            decisions.append(core.decide(_segment(sport, position, payload), meta))
        position += len(payload)
    return decisions


def test_past_depth_large_legit_head_is_not_an_anomaly() -> None:
    head = b"GET /api/totals/last/5 HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * 1800 + b"\r\n\r\n"
    # A client writes its head at once: an MSS-sized segment, then a short last one.
    decisions = _past_depth_run([(head[:1448], True), (head[1448:], True)], 47030)
    assert all(d.verdict == Verdict.ACCEPT and not d.anomalies for d in decisions)


def test_past_depth_head_split_around_a_bulk_segment_is_flagged() -> None:
    # Short start (queued), a full-sized middle the kernel keeps, a short end (queued).
    parts = [
        (b"GET /api/totals/last/1", True),
        (b"x" * 1448, False),
        (b"%20or%201=1 HTTP/1.1\r\nHost: x\r\n\r\n", True),
    ]
    decisions = _past_depth_run(parts, 47031)
    assert all(d.verdict == Verdict.FLAG for d in decisions)
    assert all(d.anomalies[0][0].value == "past_depth_fragment" for d in decisions)
