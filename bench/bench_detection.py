"""Detection quality and speed of the value classifiers on the corpora.

    python bench/bench_detection.py            # .venv: our classifier only
    /tmp/venv/bin/python bench/bench_detection.py   # + libinjection reference column
    python bench/bench_detection.py --sqlmap-dir DIR   # + every sqlmap combination

With --sqlmap-dir (an unpacked sqlmap wheel), also every compatible sqlmap
boundary x payload template combination, each tamper applied to 1,500 of them,
and 20 more seeds of the generated XSS evasions (beyond the corpus samples).

Prints, per class (SQLi, XSS, type violation): recall on the attack corpora,
false-positive rate on the benign corpora, for an untyped argument and for `num`
as an INTEGER argument; the same for libinjection (pylibinjection, SQLi only)
when it is importable; time per value; and time per byte on adversarial inputs
of growing length (a linear classifier keeps µs/byte flat). Times are CPU
time of this process (best of several passes), so other load on the machine
inflates them less than wall-clock time would.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.core.classify import MAX_CLASSIFIED_CHARS, classify_value  # noqa: E402
from agent.intel.model import ArgumentType, EvidenceKind  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "corpus"

try:
    import pylibinjection
except ImportError:  # the reference column is optional
    pylibinjection = None


def load(name: str) -> list[str]:
    # newline="": values may hold \r, \v, \f; only \n separates them.
    with open(CORPUS / name, encoding="utf-8", newline="") as handle:
        text = handle.read()
    return [line for line in text.split("\n") if line]


def rate(values: list[str], hit: Callable[[str], bool]) -> tuple[int, int]:
    return sum(1 for v in values if hit(v)), len(values)


def pct(found: tuple[int, int]) -> str:
    hits, total = found
    return f"{100.0 * hits / total:7.2f}% ({hits}/{total})" if total else "n/a"


def ours(kind: EvidenceKind, expected: ArgumentType | None = None) -> Callable[[str], bool]:
    return lambda v: any(f.kind == kind for f in classify_value(v, expected))


def ours_any(expected: ArgumentType | None = None) -> Callable[[str], bool]:
    return lambda v: any(
        f.kind in (EvidenceKind.SQLI, EvidenceKind.XSS) for f in classify_value(v, expected)
    )


def libinjection_sqli(value: str) -> bool:
    assert pylibinjection is not None
    return bool(pylibinjection.detect_sqli(value.encode("utf-8", "surrogatepass"))["sqli"])


def per_value_us(values: list[str], fn: Callable[[str], object], rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time_ns()
        for value in values:
            fn(value)
        best = min(best, (time.process_time_ns() - start) / len(values) / 1000)
    return best


def extended(sqlmap_dir: Path) -> None:
    """Beyond the corpus: all sqlmap combinations, all tampers, more XSS seeds."""
    sys.path.insert(0, str(ROOT / "bench"))
    import build_corpus  # a sibling script, only needed for this option

    rng = random.Random(1)
    combos = build_corpus.unique(build_corpus.sqlmap_payloads(sqlmap_dir, rng, per_test=10_000))
    print("\n== beyond the corpus")
    print(f"  sqlmap, every boundary x template  {pct(rate(combos, ours(EvidenceKind.SQLI)))}")
    sample = rng.sample(combos, min(1500, len(combos)))
    tampered = [tamper(v) for _, tamper in build_corpus.sqli_tampers(rng) for v in sample]
    print(f"  sqlmap x every tamper              {pct(rate(tampered, ours(EvidenceKind.SQLI)))}")
    xss_more: list[str] = []
    for _ in range(20):
        xss_more += build_corpus.xss_generated(rng)
    xss_more = build_corpus.unique(xss_more)
    print(f"  generated XSS evasions, 20 seeds   {pct(rate(xss_more, ours(EvidenceKind.XSS)))}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sqlmap-dir", type=Path, help="an unpacked sqlmap wheel")
    args = parser.parse_args()
    sqli, xss = load("sqli.txt"), load("xss.txt")
    benign, integers = load("benign.txt"), load("integers.txt")
    h_sqli, h_xss, h_benign = (
        load("heldout_sqli.txt"),
        load("heldout_xss.txt"),
        load("heldout_benign.txt"),
    )
    print(
        f"corpora: sqli {len(sqli)}, xss {len(xss)}, benign {len(benign)}, integers "
        f"{len(integers)}; held out: sqli {len(h_sqli)}, xss {len(h_xss)}, benign {len(h_benign)}"
    )
    print("\n== untyped argument (expected=None)")
    print(f"  SQLi recall        {pct(rate(sqli, ours(EvidenceKind.SQLI)))}")
    print(f"  XSS recall         {pct(rate(xss, ours(EvidenceKind.XSS)))}")
    print(f"  SQLi FP on benign  {pct(rate(benign, ours(EvidenceKind.SQLI)))}")
    print(f"  XSS FP on benign   {pct(rate(benign, ours(EvidenceKind.XSS)))}")
    print(f"  any FP on benign   {pct(rate(benign, ours_any()))}")
    print(f"  any FP on integers {pct(rate(integers, ours_any()))}")
    print("  held out (public lists the rules were not written against):")
    print(f"    SQLi recall      {pct(rate(h_sqli, ours(EvidenceKind.SQLI)))}")
    print(f"    XSS recall       {pct(rate(h_xss, ours(EvidenceKind.XSS)))}")
    print(f"    any FP on benign {pct(rate(h_benign, ours_any()))}  (libinjection's FP list)")

    integer = ArgumentType.INTEGER
    non_integers = sqli + xss + benign
    print("\n== `num` as an INTEGER argument")
    print(
        f"  type-violation recall (all non-integers) {pct(rate(non_integers, ours(EvidenceKind.TYPE_VIOLATION, integer)))}"
    )
    print(
        f"  any finding on integers (FP)             {pct(rate(integers, lambda v: bool(classify_value(v, integer))))}"
    )
    print(
        f"  SQLi recall                              {pct(rate(sqli, ours(EvidenceKind.SQLI, integer)))}"
    )
    print(
        f"  XSS recall                               {pct(rate(xss, ours(EvidenceKind.XSS, integer)))}"
    )

    if pylibinjection is not None:
        print("\n== libinjection reference (pylibinjection.detect_sqli; its XSS is not wrapped)")
        print(f"  SQLi recall        {pct(rate(sqli, libinjection_sqli))}")
        print(f"  SQLi FP on benign  {pct(rate(benign, libinjection_sqli))}")
        print(f"  SQLi FP integers   {pct(rate(integers, libinjection_sqli))}")
        print(f"  SQLi on XSS corpus {pct(rate(xss, libinjection_sqli))}  (not a FP: cross-class)")
        print(f"  held out: SQLi recall {pct(rate(h_sqli, libinjection_sqli))}, "
              f"FP {pct(rate(h_benign, libinjection_sqli))}")  # fmt: skip
    else:
        print("\n(libinjection reference skipped: pylibinjection not importable here)")

    print("\n== CPU time per value (best of 5 passes), µs")
    for name, values in (("benign", benign), ("integers", integers), ("sqli", sqli), ("xss", xss)):
        untyped = per_value_us(values, lambda v: classify_value(v, None))
        typed = per_value_us(values, lambda v: classify_value(v, integer))
        line = f"  {name:9s} ours {untyped:7.2f} (integer arg {typed:7.2f})"
        if pylibinjection is not None:
            line += f"   libinjection {per_value_us(values, libinjection_sqli):6.2f}"
        print(line)

    print(
        f"\n== adversarial inputs: µs and µs/byte by length (values cut at {MAX_CLASSIFIED_CHARS})"
    )
    patterns = {
        "quotes": "'", "parens": "(", "comments": "/*", "versioned": "/*!", "tags": "<a ",
        "entities": "&#", "js-escapes": "\\x", "or-1=": "or 1=", "union": "union ",
        "js-breakout": "'-alert(", "handlers": " on", "templates": "{{", "mixed": "'\"<(/*&#\\",
        "backslashes": "\\", "dashes": "--", "hash": "#", "dollar": "$$", "spaces": " ",
    }  # fmt: skip
    worst = 0.0
    for label, unit in patterns.items():
        cells = []
        per_byte = []
        for length in (1024, 4096, 8192, 65536):
            value = (unit * (length // len(unit) + 1))[:length]
            elapsed = float("inf")
            for _ in range(5):  # best of 5: one pass is at the mercy of the scheduler
                start = time.process_time_ns()
                classify_value(value, None)
                elapsed = min(elapsed, (time.process_time_ns() - start) / 1000)
            cells.append(f"{length // 1024:3d}K {elapsed:9.1f}")
            per_byte.append(elapsed / min(length, MAX_CLASSIFIED_CHARS))
        growth = per_byte[2] / per_byte[0] if per_byte[0] else 0.0
        worst = max(worst, growth)
        print(f"  {label:12s} " + "  ".join(cells) + f"   µs/byte 1K→8K x{growth:4.2f}")
    print(f"  worst µs/byte growth 1K→8K: x{worst:.2f} (≈1 means linear)")
    if args.sqlmap_dir is not None:
        extended(args.sqlmap_dir)
    sizes = [len(v) for v in benign]
    print(f"\n(benign values: median {statistics.median(sizes):.0f} chars, max {max(sizes)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
