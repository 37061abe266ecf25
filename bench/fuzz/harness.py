"""Coverage-guided fuzzing (atheris/libFuzzer) of what attackers and feeds hand the agent.

    .venv/bin/pip install -e '.[fuzz]'
    .venv/bin/python bench/fuzz/harness.py TARGET [libFuzzer flags] [CORPUS_DIR]
    e.g. .venv/bin/python bench/fuzz/harness.py decide -max_total_time=120 -timeout=2 \
             -dict=bench/fuzz/http.dict
    .venv/bin/python bench/fuzz/harness.py replay TARGET CRASH_FILE...

Targets:
- decide: one packet through `DecisionCore.decide`, or (first byte odd) an HTTP
  client stream cut into segments on a fresh flow; every notable Decision is
  turned into its event and JSON line.
- http: `HttpRequestStream` fed in chunks, then `finish`; each request's path
  normalized and its parameters extracted.
- intel: the VulDB Markdown, STIX, plain-list and enrichment parsers.

The oracle: any exception is a crash (malformed input must come back as data),
a log line must stay one line, and libFuzzer's `-timeout` catches slow inputs.
The harness also prints each new worst time per input byte (inputs of 256
bytes or more) to stderr: a quadratic path shows as a growing figure.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# atheris 2.3 rewrites 3.11 bytecode wrongly in some loops (google/atheris#57 family):
# instrumented, xss._without_comments saw an int for its `text`. Modules where that
# happened are left uninstrumented; `replay` runs a crash file with no instrumentation
# at all, to tell such artifacts from real bugs.
UNINSTRUMENTED = ["agent.core.xss"]

with atheris.instrument_imports(include=["agent"], exclude=UNINSTRUMENTED):
    from agent.core.decision import PacketMeta
    from agent.core.engine import DecisionCore
    from agent.core.http import HttpRequestStream
    from agent.core.normalize import normalize_path
    from agent.core.params import extract_params
    from agent.core.routes import RouteMatcher
    from agent.events import decision_event
    from agent.intel.enrichment import parse_enrichment
    from agent.intel.plainlist import parse_plainlist
    from agent.intel.stix import parse_stix
    from agent.intel.vuldb import parse_vuldb

from bench.bench_floods import CLIENT, SERVER, tcp4  # noqa: E402  (after the path insert)

META = PacketMeta(timestamp=1_700_000_000.0)
ROUTES = RouteMatcher(["/api/totals/last/{num}", "/api/diffs/last/{num}"])
_worst = [0.0]


def _core() -> DecisionCore:
    from tests.helpers import default_core

    return default_core()


CORE = _core()
_port = [1024]


def _chunks(fdp: atheris.FuzzedDataProvider, data: bytes) -> list[bytes]:
    out, start = [], 0
    while start < len(data):
        size = fdp.ConsumeIntInRange(1, 2048) if fdp.remaining_bytes() else len(data)
        out.append(data[start : start + size])
        start += size
    return out


def fuzz_decide(data: bytes) -> None:
    if not data:
        return
    if data[0] & 1 == 0:
        decisions = [CORE.decide(data[1:], META)]
    else:
        _port[0] = _port[0] + 1 if _port[0] < 65000 else 1025
        port = _port[0]
        fdp = atheris.FuzzedDataProvider(data[1:9])
        stream = data[9:]
        CORE.decide(tcp4(CLIENT, SERVER, port, 80, 0x02, 0), META)
        decisions = []
        offset = 1
        for chunk in _chunks(fdp, stream):
            packet = tcp4(CLIENT, SERVER, port, 80, 0x18, offset, 1, chunk)
            decisions.append(CORE.decide(packet, META))
            offset += len(chunk)
    for decision in decisions:
        if decision.is_notable:
            line = json.dumps(decision_event(decision, timestamp=1.0, source="nfqueue", mode="enforce"),
                              ensure_ascii=False)  # fmt: skip
            if len(line.splitlines()) != 1:
                raise AssertionError(f"event is not one line: {line[:300]!r}")


def fuzz_http(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data[:8])
    stream = HttpRequestStream(max_body=4096)
    requests = []
    for chunk in _chunks(fdp, data[8:]):
        requests.extend(stream.feed(chunk))
    requests.extend(stream.finish())
    for request in requests:
        path = normalize_path(request.target)
        extract_params(request, ROUTES, path=path)


def fuzz_intel(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    parse_vuldb(text, "fuzz.md")
    parse_stix(text, "fuzz.json")
    parse_plainlist(text, "fuzz.txt")
    parse_enrichment(text, "fuzz.toml")


TARGETS: dict[str, Callable[[bytes], None]] = {
    "decide": fuzz_decide,
    "http": fuzz_http,
    "intel": fuzz_intel,
}


def timed(target: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """Time each input; a new worst per byte is re-timed (a GC pause is not a slow path)
    and, if confirmed, saved under $RF_FUZZ_SLOW_DIR for `replay`."""
    slow_dir = os.environ.get("RF_FUZZ_SLOW_DIR")

    def seconds(data: bytes) -> float:
        start = time.perf_counter()
        target(data)
        return time.perf_counter() - start

    def run(data: bytes) -> None:
        first = seconds(data)
        if len(data) < 256 or first / len(data) <= _worst[0]:
            return
        per_byte = min(first, seconds(data)) / len(data)
        if per_byte > _worst[0]:
            _worst[0] = per_byte
            print(f"#worst {per_byte * 1e6:.3f} us/byte at {len(data)} bytes", file=sys.stderr)
            if slow_dir:
                Path(slow_dir, f"slow-{per_byte * 1e6:.0f}us-{len(data)}").write_bytes(data)

    return run


def replay(target: Callable[[bytes], None], paths: list[str]) -> None:
    """Run saved inputs through `target` (a crash file from libFuzzer); raises what it raises."""
    for path in paths:
        target(Path(path).read_bytes())
        print(f"{path}: no exception")


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "replay" and sys.argv[2] in TARGETS:
        replay(TARGETS[sys.argv[2]], sys.argv[3:])
        return
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        raise SystemExit(f"usage: harness.py {{{','.join(TARGETS)}}} [libFuzzer flags]")
    target = TARGETS[sys.argv.pop(1)]
    atheris.Setup(sys.argv, timed(target))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
