"""The `rustyflag-agent` command line.

Every command that reads intel takes `--intel PATH` (repeatable) and
`--no-default-intel`. Bad input gives `file:line: what is wrong` and exit 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.config import Settings, load_settings
from agent.errors import AgentError, ConfigError, Problem
from agent.gctune import tune_gc
from agent.intel.loading import IntelLoad, load_intel
from agent.intel.snapshot import IntelSnapshot

if TYPE_CHECKING:
    from agent.core.engine import DecisionCore

EXIT_OK = 0
EXIT_UNUSABLE = 2
EXIT_NOT_RUNNING = 3
EXIT_INTERNAL = 70


def _add_common(parser: argparse.ArgumentParser, *, intel: bool = True) -> None:
    parser.add_argument(
        "--config", type=Path, help="agent.toml (default /etc/rustyflag-agent/agent.toml)"
    )
    if intel:
        parser.add_argument(
            "--intel",
            type=Path,
            action="append",
            default=[],
            metavar="PATH",
            help="an intel file or directory added to the configured sources (repeatable)",
        )
        parser.add_argument(
            "--no-default-intel",
            action="store_true",
            help="leave the configured intel sources out (use only --intel)",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rustyflag-agent",
        description="Network-edge blocking agent: threat intel in, nftables sets and an NFQUEUE HTTP inspector out.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("check", help="validate the config and every intel source")
    _add_common(check)
    check.add_argument("--json", action="store_true", help="machine-readable summary")

    intel = commands.add_parser("intel", help="inspect the merged intel")
    intel_commands = intel.add_subparsers(dest="intel_command", required=True, metavar="SUBCOMMAND")
    show = intel_commands.add_parser("show", help="print the merged indicators")
    _add_common(show)
    show.add_argument("--json", action="store_true", help="JSON output")

    replay = commands.add_parser("replay", help="run the decision core over a pcap/pcapng file")
    replay.add_argument("pcap", type=Path, metavar="FILE")
    _add_common(replay)
    replay.add_argument(
        "--json", action="store_true", help="one JSON decision per line, then a JSON summary"
    )
    replay.add_argument("--all", action="store_true", help="also print plain accepts")
    replay.add_argument(
        "--dry-run", action="store_true", help="decide as in dry-run mode (drop -> would_drop)"
    )

    run = commands.add_parser("run", help="enforce on this gateway (nftables + NFQUEUE + NFLOG)")
    _add_common(run)
    run.add_argument(
        "--dry-run", action="store_true", help="audit mode: log what would be dropped, drop nothing"
    )
    status = commands.add_parser(
        "status", help="the running agent at a glance (its metrics endpoint and nft counters)"
    )
    _add_common(status, intel=False)
    status.add_argument("--json", action="store_true", help="machine-readable status")
    return parser


# -- shared steps -------------------------------------------------------------------------


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    settings = load_settings(args.config)
    if overrides:
        settings = settings.model_copy(update=overrides)
    return settings


def _load(args: argparse.Namespace, settings: Settings) -> IntelLoad:
    return load_intel(settings, args.intel, include_configured=not args.no_default_intel)


def _require_snapshot(load: IntelLoad) -> IntelSnapshot:
    if load.snapshot is None:
        raise AgentError([Problem(p.source.path, p.source.line, p.message) for p in load.errors])
    for warning in load.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return load.snapshot


# -- commands -------------------------------------------------------------------------------


def _campaign_summary(snapshot: IntelSnapshot) -> list[dict[str, Any]]:
    rows = []
    for campaign in snapshot.campaigns:
        rows.append(
            {
                "campaign": campaign.name,
                "kind": campaign.kind.value,
                "source": campaign.source,
                "iocs": len(campaign.iocs),
                "techniques": len(campaign.techniques),
                "ioas": len(campaign.ioas),
                "withheld": dict(campaign.withheld),
                "enriched": campaign.enrichment is not None,
                "warnings": list(campaign.warnings),
            }
        )
    return rows


def cmd_check(args: argparse.Namespace) -> int:
    problems: list[str] = []
    settings: Settings | None = None
    try:
        settings = _settings(args)
    except ConfigError as exc:
        problems.extend(str(p) for p in exc.problems)
    load = _load(args, settings if settings is not None else Settings.model_construct())
    problems.extend(str(p) for p in load.errors)
    if os.geteuid() == 0:
        # What `run` refuses (files others could write steer the firewall), said early.
        from agent.service.permissions import source_problems

        problems.extend(str(p) for p in source_problems(args.config, load.sources))
    campaigns = _campaign_summary(load.snapshot) if load.snapshot else []
    warnings = [str(w) for w in load.warnings]
    usable = not problems and load.snapshot is not None
    summary: dict[str, Any] = {
        "usable": not problems and load.snapshot is not None,
        "intel_version": load.snapshot.intel_version if load.snapshot else None,
        "mode": settings.mode if settings else None,
        "sources": [str(p) for p in load.sources],
        "campaigns": campaigns,
        "errors": problems,
        "warnings": warnings,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for row in campaigns:
            withheld = ", ".join(f"{k} {v}" for k, v in row["withheld"].items()) or "none"
            print(
                f"{row['campaign']} ({row['kind']}): {row['iocs']} IOC, {row['techniques']} TTP, "
                f"{row['ioas']} IOA; withheld: {withheld}; enrichment: {'yes' if row['enriched'] else 'no'}"
            )
        for warning in warnings:
            print(f"warning: {warning}")
        for error in problems:
            print(f"error: {error}", file=sys.stderr)
        if usable:
            print(f"ok: intel_version {summary['intel_version']}, mode {summary['mode']}")
    return EXIT_OK if usable else EXIT_UNUSABLE


def cmd_intel_show(args: argparse.Namespace) -> int:
    snapshot = _require_snapshot(_load(args, _settings(args)))
    data: dict[str, Any] = {
        "intel_version": snapshot.intel_version,
        "campaigns": [
            {
                "name": c.name,
                "kind": c.kind.value,
                "source": c.source,
                "content_hash": c.content_hash,
                "actors": [{"name": a.name, "confidence": a.confidence.value} for a in c.actors],
                "iocs": [
                    {
                        "id": i.id,
                        "value": i.value,
                        "hostname": i.hostname,
                        "actor": i.actor,
                        "confidence": i.confidence.value,
                        "source": str(i.source),
                    }
                    for i in c.iocs
                ],
                "techniques": [
                    {
                        "id": t.attack_id,
                        "cwe": list(t.cwes),
                        "description": t.description,
                        "confidence": t.confidence.value,
                    }
                    for t in c.techniques
                ],
                "ioas": [
                    {
                        "id": a.id,
                        "type": a.type.value,
                        "value": a.value,
                        "confidence": a.confidence.value,
                    }
                    for a in c.ioas
                ],
                "references": list(c.references),
                "withheld": dict(c.withheld),
                "enrichment": None
                if c.enrichment is None
                else {
                    "cves": list(c.enrichment.cves),
                    "routes": list(c.enrichment.routes),
                    "arguments": {k: v.value for k, v in c.enrichment.argument_types},
                    "techniques": {k.value: v for k, v in c.enrichment.evidence_techniques},
                    "actions": {k.value: v.value for k, v in c.enrichment.actions},
                },
            }
            for c in snapshot.campaigns
        ],
    }
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    print(f"intel_version {snapshot.intel_version}")
    for campaign in data["campaigns"]:
        print(f"\n== {campaign['name']} ({campaign['kind']}) from {campaign['source']}")
        for ioc in campaign["iocs"]:
            host = (
                f" {ioc['hostname']}" if ioc["hostname"] and ioc["hostname"] != ioc["value"] else ""
            )
            print(f"  IOC  {ioc['value']}{host} [{ioc['confidence']}]")
        for technique in campaign["techniques"]:
            print(
                f"  TTP  {technique['id']} {','.join(technique['cwe'])} {technique['description']} [{technique['confidence']}]"
            )
        for ioa in campaign["ioas"]:
            print(f"  IOA  {ioa['type']}: {ioa['value']} [{ioa['confidence']}]")
        if campaign["enrichment"]:
            print(f"  enrichment: {json.dumps(campaign['enrichment'])}")
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    from agent.wiring import build_core

    settings = _settings(args, mode="dry-run") if args.dry_run else _settings(args)
    snapshot = _require_snapshot(_load(args, settings))
    if not args.pcap.is_file():
        raise AgentError([Problem(str(args.pcap), 0, "no such pcap file")])
    core = build_core(settings, snapshot)
    # Intel and the core live for the whole replay: out of the GC's way (as in workers),
    # and back as they were afterwards (main() also runs inside other programs' processes).
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    tune_gc()
    try:
        return _replay(args, settings, snapshot, core)
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def _replay(
    args: argparse.Namespace, settings: Settings, snapshot: IntelSnapshot, core: DecisionCore
) -> int:
    from agent.pcap import PcapError
    from agent.replay import json_line_sink, replay_pcap, text_line_sink

    write = sys.stdout.write
    sink = json_line_sink(write) if args.json else text_line_sink(write)
    try:
        summary = replay_pcap(
            args.pcap,
            core,
            sink,
            mode=settings.mode,
            include_accepts=args.all,
            value_limit=settings.log.max_value_length,
        )
    except PcapError as exc:
        raise AgentError([Problem(str(args.pcap), 0, str(exc))]) from exc
    result = summary.as_dict() | {"intel_version": snapshot.intel_version}
    if args.json:
        print(json.dumps(result, separators=(",", ":")))
    else:
        print(f"\n{summary.packets} packets, {summary.events} decisions logged")
        for key in ("actions", "techniques", "campaigns", "decode_failures"):
            if result[key]:
                print(f"  {key}: " + ", ".join(f"{k}={v}" for k, v in result[key].items()))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from agent.service.daemon import run_agent

    settings = _settings(args, mode="dry-run") if args.dry_run else _settings(args)
    return run_agent(settings, args)


def cmd_status(args: argparse.Namespace) -> int:
    from agent.service.status import gather, render

    report = gather(_settings(args))
    print(json.dumps(report, indent=2) if args.json else render(report))
    # As `systemctl status`: 3 when the agent is not running.
    return EXIT_OK if report["running"] else EXIT_NOT_RUNNING


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "check":
        return cmd_check(args)
    if args.command == "intel":
        return cmd_intel_show(args)
    if args.command == "replay":
        return cmd_replay(args)
    if args.command == "run":
        return cmd_run(args)
    if args.command == "status":
        return cmd_status(args)
    raise AssertionError(args.command)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except AgentError as exc:
        for problem in exc.problems:
            print(f"rustyflag-agent: {problem}", file=sys.stderr)
        return EXIT_UNUSABLE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # an operator gets one located line, not a traceback
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        print(
            f"rustyflag-agent: internal error: {type(exc).__name__}: {exc} "
            f"(at {frame.filename}:{frame.lineno}); please report it",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
