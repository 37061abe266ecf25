"""Real attack tools through the lab: sqlmap against the vulnerable metrics-ui app.

For each injection point of CVE-2015-10023 (`num` in the path, the query and a
form body) sqlmap runs from the client namespace toward the server, through
the gateway where the agent runs:
- flag mode (the shipped policy): every request sqlmap sends with a payload in
  `num` should be flagged; we count sqlmap's requests at the server and the
  agent's flag events, and sqlmap still finds the injection (nothing dropped);
- drop mode (`[actions] sqli = type_violation = "drop"`): sqlmap must not find
  the injection.
sqlmap (GPL) is a tool run here, never a dependency: it is installed into its
own venv under bench/out/. Everything stays inside the lab's namespaces.

Usage: python bench/bench_attack_tools.py [--level 1] [--timeout 600]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_plus

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.lab.demo import start_agent  # noqa: E402
from tests.lab.netns import ADDR, Lab, cleanup_stale  # noqa: E402
from tests.lab.server_app import ServerApp  # noqa: E402

TOOLS_VENV = REPO / "bench" / "out" / "tools-venv"
CAMPAIGNS = REPO / "configs" / "campaigns"

TARGETS = {
    "path": ["-u", "http://{server}/api/totals/last/1*"],
    "query": ["-u", "http://{server}/api/totals?num=1", "-p", "num"],
    "form": ["-u", "http://{server}/api/totals", "--data", "num=1", "-p", "num"],
}


def sqlmap() -> Path:
    binary = TOOLS_VENV / "bin" / "sqlmap"
    if not binary.exists():
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(TOOLS_VENV)], check=True)
        subprocess.run([str(TOOLS_VENV / "bin" / "pip"), "install", "-q", "sqlmap"], check=True)
    return binary


def write_config(workdir: Path, drop: bool) -> Path:
    intel = workdir / "intel"
    intel.mkdir()
    (intel / "rusty-flag.md").write_text((CAMPAIGNS / "rusty-flag.md").read_text())
    enrichment = (CAMPAIGNS / "rusty-flag.enrich.toml").read_text()
    if drop:
        for kind in ("sqli", "xss", "type_violation"):
            enrichment = enrichment.replace(f'{kind} = "flag"', f'{kind} = "drop"')
    (intel / "rusty-flag.enrich.toml").write_text(enrichment)
    config = workdir / "agent.toml"
    config.write_text(
        f'mode = "enforce"\n[intel]\nsources = [{json.dumps(str(intel))}]\n'
        '[nft]\nhooks = ["forward"]\n[log]\nformat = "json"\n'
    )
    return config


def server_requests(app: ServerApp) -> list[str]:
    """Request targets the server app answered so far (its access log: one line per request)."""
    targets = []
    for line in app.log().splitlines():
        for method in ('"GET ', '"POST '):
            if method in line:
                targets.append(line.split(method, 1)[1].rsplit(" HTTP/", 1)[0])
    return targets


def carries_payload(target: str) -> bool | None:
    """Whether `num` in a logged target is anything but an integer (None: not visible, e.g. a form body)."""
    path, _, query = target.partition("?")
    if path.startswith("/api/totals/last/") or path.startswith("/api/diffs/last/"):
        value = unquote(path.rsplit("/last/", 1)[1])
    elif query:
        values = [
            unquote_plus(v)
            for k, v in (p.partition("=")[::2] for p in query.split("&"))
            if k == "num"
        ]
        if not values:
            return None
        value = values[0]
    else:
        return None
    return not value.isdigit()


def run_point(lab: Lab, tool: Path, point: str, level: int, timeout: float) -> dict[str, Any]:
    args = [a.replace("{server}", ADDR.server_v4) for a in TARGETS[point]]
    out_dir = tempfile.mkdtemp(prefix="rf-sqlmap-")
    started = time.monotonic()
    result = lab.client.run(
        [
            str(tool),
            *args,
            "--batch",
            f"--level={level}",
            "--risk=1",
            "--dbms=SQLite",
            "--flush-session",
            f"--output-dir={out_dir}",
            "--timeout=5",
            "--retries=0",
            "--disable-coloring",
            "-v",
            "1",
        ],
        check=False,
        timeout=timeout,
    )
    output = result.stdout + result.stderr
    found = "is vulnerable" in output or "sqlmap identified the following injection point" in output
    return {
        "point": point,
        "found": found,
        "seconds": round(time.monotonic() - started, 1),
        "tail": output[-600:],
    }


def count_events(events: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in events:
        if event.get("event") != "decision" or event.get("source") != "nfqueue":
            continue
        counts[event["action"]] = counts.get(event["action"], 0) + 1
    return counts


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--level", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--points", default="path,query,form")
    args = parser.parse_args()
    tool = sqlmap()
    cleanup_stale()
    rows = []
    for drop in (False, True):
        workdir = Path(tempfile.mkdtemp(prefix="rf-attack-"))
        config = write_config(workdir, drop)
        with Lab() as lab:
            app = lab.start_server_app()
            agent = start_agent(lab, config, workdir / "agent.jsonl")
            for point in args.points.split(","):
                before = len(server_requests(app))
                events_before = len(agent.events())
                row = run_point(lab, tool, point, args.level, args.timeout)
                events = agent.events()[events_before:]
                row["mode"] = "drop" if drop else "flag"
                row["decisions"] = count_events(events)
                seen = server_requests(app)[before:]
                row["server_requests"] = len(seen)
                row["payload_requests"] = sum(1 for t in seen if carries_payload(t))
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "tail"}), flush=True)
            agent.stop()
    print("\nsqlmap against the lab (CVE-2015-10023 injection points)")
    print(
        f"{'mode':<6} {'point':<6} {'sqlmap found it':<16} {'server saw':>10} "
        f"{'with payload':>12} {'decisions':<32} {'time':>6}"
    )
    for row in rows:
        payload = row["payload_requests"] if row["point"] != "form" else "n/a"
        print(
            f"{row['mode']:<6} {row['point']:<6} {('YES' if row['found'] else 'no'):<16} "
            f"{row['server_requests']:>10} {payload!s:>12} {json.dumps(row['decisions']):<32} "
            f"{row['seconds']:>5}s"
        )
    blocked = all(not r["found"] for r in rows if r["mode"] == "drop")
    print(f"\ndrop mode stops sqlmap on every point: {'yes' if blocked else 'NO'}")
    return 0 if blocked else 1


if __name__ == "__main__":
    raise SystemExit(main())
