"""Log injection (issue 8): hostile requests give one valid JSON line per event, values bounded.

Requests carry CR/LF (raw where the parser lets them through, percent-encoded
otherwise), ANSI escapes, invalid UTF-8, Unicode line and paragraph
separators, NUL, and 1 MB request targets. They go through the decision core
and out through the worker's own `log_decision` and the JSON logger the
agent configures, into a file. The file must then hold exactly one line per
logged event, each a JSON object, with no raw control byte and no character
that a line splitter (Python's `str.splitlines`, journald) would split on;
long values end with the truncation marker.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.core.decision import Decision, PacketMeta
from agent.core.engine import DecisionCore
from agent.events import TRUNCATION_MARKER, decision_event, escape_value
from agent.logsetup import configure_logging, get_logger
from agent.service.worker import log_decision
from bench.bench_floods import SERVER, tcp4
from tests.helpers import assert_valid_event, default_core

LIMIT = 256
CLIENT = bytes((10, 211, 1, 2))
META = PacketMeta(timestamp=1_700_000_000.0, queue=0)
# Characters a line-oriented reader splits on (str.splitlines) besides \n.
LINE_BREAKS = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
CONTROL_BYTES = re.compile(rb"[\x00-\x1f\x7f]")

HOSTILE_PIECES: tuple[bytes, ...] = (
    b"%0d%0a", b"%0D%0A{\"event\":\"forged\"}", b"\r\n", b"\n", b"\r", b"\x1b[31m", b"%1b%5b2J",
    b"\x1b]0;title\x07", b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xe2\x80\xa8", b"\xc2\x85",
    b"%e2%80%a8", b"%c2%85", b"\x00", b"%00", b"\\u2028", b"'%20OR%201=1--", b"<script>",
    b"\"}", b"\x7f", b"%ff", b"\t", b"\x08\x08\x08",
)  # fmt: skip


class LoggedCore:
    """A core whose notable decisions go through the agent's logger into `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.core: DecisionCore = default_core()
        self.logged = 0
        self.port = 20000
        self._sink = path.open("w")
        configure_logging(level="info", fmt="json", stream=self._sink)
        self.log = get_logger()

    def decide(self, packet: bytes) -> Decision:
        decision = self.core.decide(packet, META)
        if decision.is_notable:
            log_decision(self.log, decision, META, source="nfqueue", mode="enforce", value_limit=LIMIT)
            self.logged += 1
        return decision

    def send(self, data: bytes, segment: int = 16000) -> list[Decision]:
        """A new flow (handshake) carrying `data` in segments of `segment` bytes."""
        self.port = self.port + 1 if self.port < 60000 else 20001
        port = self.port
        self.decide(tcp4(CLIENT, SERVER, port, 80, 0x02, 0))
        self.decide(tcp4(SERVER, CLIENT, 80, port, 0x12, 0, 1))
        return [
            self.decide(tcp4(CLIENT, SERVER, port, 80, 0x18, 1 + start, 1, data[start : start + segment]))
            for start in range(0, len(data), segment)
        ]

    def lines(self) -> list[bytes]:
        self._sink.flush()
        return self.path.read_bytes().split(b"\n")[:-1]

    def close(self) -> None:
        self._sink.close()


@pytest.fixture
def logged(tmp_path: Path) -> Iterator[LoggedCore]:
    core = LoggedCore(tmp_path / "events.jsonl")
    yield core
    core.close()
    configure_logging(level="info", fmt="json")


def check_lines(logged: LoggedCore) -> list[dict[str, Any]]:
    """Every line one JSON object, one per logged event, nothing a reader could split or render."""
    lines = logged.lines()
    assert len(lines) == logged.logged
    events = []
    for raw in lines:
        assert not CONTROL_BYTES.search(raw), raw[:200]
        text = raw.decode("utf-8")  # strict: invalid UTF-8 never reaches the log
        assert not LINE_BREAKS.search(text), text[:200]
        assert len(text.splitlines()) == 1
        event = json.loads(text)
        assert isinstance(event, dict)
        assert event["event"] == "decision"
        events.append(event)
    return events


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def request(target: bytes, *headers: bytes) -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: metrics\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"


@pytest.mark.parametrize("piece", HOSTILE_PIECES, ids=lambda p: p.hex())
def test_hostile_bytes_in_target_headers_and_body_stay_on_one_line(
    logged: LoggedCore, piece: bytes
) -> None:
    sqli = b"'%20OR%201=1--"
    logged.send(request(b"/api/totals/last/1" + piece + sqli))
    logged.send(request(b"/a?num=1" + piece + sqli))
    logged.send(request(b"/a?" + piece + b"num=" + sqli))
    logged.send(request(b"/a", b"X-Evil: " + piece + b"x", b"Cookie: num=" + piece + sqli))
    logged.send(request(b"/a", b"Host2" + piece + b": x"))
    logged.send(b"GET /a HTTP/1.1\r\nHost: " + piece + b"evil\r\n\r\n")
    body = b"num=" + piece + sqli
    logged.send(
        b"POST /api/diffs/last/2 HTTP/1.1\r\nHost: metrics\r\nContent-Type: "
        b"application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    events = check_lines(logged)
    assert events, "the SQLi should have made at least one event"
    for event in events:
        for text in _strings(event):
            assert text.isprintable(), text[:200]


@pytest.mark.parametrize("filler", [b"A", b"%0d%0a", b"\x1b[1m", b"\xff", b"'%20OR%201=1--"])
def test_one_megabyte_targets_are_bounded_and_marked(logged: LoggedCore, filler: bytes) -> None:
    target = b"/api/totals/last/" + filler * (1_000_000 // len(filler))
    logged.send(request(target), segment=1400)
    target = b"/a?num=" + filler * (1_000_000 // len(filler))
    logged.send(request(target), segment=60000)
    events = check_lines(logged)
    assert events, "a 1 MB head must be reported"
    for raw, event in zip(logged.lines(), events, strict=True):
        assert len(raw) < 16 * LIMIT * 8, len(raw)
        for text in _strings(event):
            assert len(text) <= LIMIT + len(TRUNCATION_MARKER)
    cut = [
        text for event in events for text in _strings(event) if text.endswith(TRUNCATION_MARKER)
    ]
    anomalies = [a["detail"] for e in events for a in e.get("anomalies", [])]
    # Cut at the log limit, or stopped by the parser (head too large, or a byte llhttp
    # refuses in a target, like ESC): either way reported, never logged whole.
    assert cut or any(a.startswith(("head_too_large", "parse_error")) for a in anomalies)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=600), st.integers(min_value=16, max_value=300))
def test_escape_value_is_printable_bounded_and_marked(value: str, limit: int) -> None:
    out = escape_value(value, limit)
    assert out.isprintable()
    assert not LINE_BREAKS.search(out)
    if len(value) > limit:
        assert out.endswith(TRUNCATION_MARKER)
        assert len(out) == limit + len(TRUNCATION_MARKER)
    else:
        assert len(out) <= limit


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from((*HOSTILE_PIECES, b"a", b"/", b"=", b"&", b"num=")), max_size=40))
def test_generated_hostile_targets_make_valid_events(pieces: list[bytes]) -> None:
    core = default_core()
    target = b"/api/totals/last/" + b"".join(pieces)
    packet = tcp4(CLIENT, SERVER, 33333, 80, 0x18, 1, 1, request(target))
    decision = core.decide(packet, META)
    event = decision_event(decision, timestamp=1.0, source="nfqueue", mode="enforce")
    assert_valid_event(event)
    line = json.dumps(event, ensure_ascii=False)
    assert len(line.splitlines()) == 1
    assert not LINE_BREAKS.search(line)


def test_decoded_crlf_and_escapes_are_logged_escaped(logged: LoggedCore) -> None:
    logged.send(request(b"/api/totals/last/1%0d%0a%1b%5b31m%e2%80%a8'%20OR%201=1--"))
    (event,) = check_lines(logged)
    values = [r["evidence"]["value"] for r in event["reasons"]]
    assert any("\\x0d\\x0a\\x1b[31m\\u2028'" in v for v in values), values


@pytest.mark.parametrize("hostile", ["\u2028", "\u2029", "\x85", "\n", "\r", "\x1b[2J", "\udcff"])
def test_any_log_event_stays_one_line(tmp_path: Path, hostile: str) -> None:
    # Regression: JSON leaves U+2028/U+2029/U+0085 raw, and str.splitlines() (the
    # demo's and tests' event readers) split a line on them. Any event, not only
    # decisions (which escape their values), e.g. an error carrying an exception text.
    path = tmp_path / "log.jsonl"
    with path.open("w") as sink:
        configure_logging(level="info", fmt="json", stream=sink)
        try:
            get_logger().error("inspector_error", error=f"bad {hostile}{{\"forged\": 1}} value")
        finally:
            configure_logging(level="info", fmt="json")
    text = path.read_bytes().decode("utf-8")
    assert len(text.splitlines()) == 1
    event = json.loads(text)
    assert event["error"] == f"bad {hostile}{{\"forged\": 1}} value"
