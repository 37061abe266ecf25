"""The namespace lab: client <-veth-> gateway <-veth-> server, isolated from the host.

`Lab` owns the lifecycle (build, safety check, process tracking, teardown);
`Netns` runs commands inside one namespace. Every veth is created directly
inside a lab namespace (`ip -n NS link add ... peer ... netns PEER`), so no
interface ever exists in the host namespace, and the host's firewall and
routes are never touched.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from tests.lab import traffic
from tests.lab.server_app import ServerApp, start_in

REPO_ROOT = Path(__file__).resolve().parents[2]
NETNS_DIR = Path("/run/netns")
DEFAULT_PREFIX = "rf-"

# Interface names are fixed: names only need to be unique per namespace.
CLIENT_IF = "cli0"  # client side, peer of GW_CLIENT_IF
GW_CLIENT_IF = "gw-cli"  # gateway, towards the client
GW_SERVER_IF = "gw-srv"  # gateway, towards the server
SERVER_IF = "srv0"  # server side, peer of GW_SERVER_IF


@dataclass(frozen=True, slots=True)
class LabAddresses:
    """The lab's addressing plan (fixed, so tests and configs can name it)."""

    client_v4: str = "10.211.1.2"
    client_v6: str = "fd00:211:1::2"
    gw_client_v4: str = "10.211.1.1"
    gw_client_v6: str = "fd00:211:1::1"
    gw_server_v4: str = "10.211.2.1"
    gw_server_v6: str = "fd00:211:2::1"
    server_v4: str = "10.211.2.2"
    server_v6: str = "fd00:211:2::2"
    # The Rusty Flag IOC and an IPv6 IOC-like address, as real server hosts.
    ioc_v4: str = "78.135.73.140"
    ioc_v6: str = "2001:db8:bad::140"
    client_net_v4: str = "10.211.1.0/24"
    client_net_v6: str = "fd00:211:1::/64"
    server_net_v4: str = "10.211.2.0/24"
    server_net_v6: str = "fd00:211:2::/64"


ADDR = LabAddresses()


class LabSafetyError(RuntimeError):
    """The lab is not (or no longer) provably isolated from the host."""


class LabUnavailableError(RuntimeError):
    """This machine cannot build the lab (not root, no `ip netns`)."""


def lab_unavailable_reason() -> str | None:
    """Why the lab cannot be built here, or None if it can."""
    if os.geteuid() != 0:
        return "the namespace lab needs root (CAP_NET_ADMIN and mounts under /run/netns)"
    try:
        probe = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, timeout=5.0, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns` is unavailable: {exc}"
    if probe.returncode != 0:
        return f"`ip netns list` failed: {probe.stderr.strip()}"
    return None


class ProcessTracker:
    """Processes started in lab namespaces; each leads its own process group."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[Any]] = []

    def add(self, proc: subprocess.Popen[Any]) -> None:
        self._procs.append(proc)

    def stop_all(self, grace: float = 2.0) -> None:
        live = [p for p in self._procs if p.poll() is None]
        for proc in live:
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in live:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=2.0)
        for proc in self._procs:
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        self._procs.clear()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # Popen(start_new_session=True) makes the child its group leader.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def python_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for the project's python inside a namespace: repo importable."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = f"{REPO_ROOT}{os.pathsep}{path}" if path else str(REPO_ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


class Netns:
    """One named network namespace; commands run via `ip netns exec NAME`."""

    def __init__(self, name: str, tracker: ProcessTracker | None = None) -> None:
        self.name = name
        self._tracker = tracker

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def run(
        self,
        args: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 30.0,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `args` inside the namespace and wait (bounded by `timeout`)."""
        return subprocess.run(
            [*self.exec_prefix(), *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            input=input,
            cwd=REPO_ROOT,
            env=dict(env) if env is not None else None,
        )

    def popen(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start `args` inside the namespace; the lab stops it on exit.

        Defaults: its own session (so the whole group can be killed), cwd at
        the repo root, stdin closed. Other `subprocess.Popen` kwargs pass through.
        """
        kwargs.setdefault("start_new_session", True)
        kwargs.setdefault("cwd", REPO_ROOT)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc: subprocess.Popen[Any] = subprocess.Popen([*self.exec_prefix(), *args], **kwargs)
        if self._tracker is not None:
            self._tracker.add(proc)
        return proc

    def python(
        self,
        code: str,
        *argv: str,
        check: bool = True,
        timeout: float = 30.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `python -c code argv...` with the project's interpreter, inside the namespace."""
        return self.run(
            [sys.executable, "-c", code, *argv],
            check=check,
            timeout=timeout,
            input=input,
            env=python_env(),
        )

    def python_module(
        self,
        module: str,
        *argv: str,
        check: bool = True,
        timeout: float = 30.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `python -m module argv...` inside the namespace and wait."""
        return self.run(
            [sys.executable, "-m", module, *argv],
            check=check,
            timeout=timeout,
            input=input,
            env=python_env(),
        )

    def spawn_python_module(
        self, module: str, *argv: str, **kwargs: Any
    ) -> subprocess.Popen[Any]:
        """Start `python -m module argv...` inside the namespace (tracked)."""
        kwargs.setdefault("env", python_env())
        return self.popen([sys.executable, "-m", module, *argv], **kwargs)

    def ip_json(self, *args: str) -> list[dict[str, Any]]:
        """`ip -j ARGS` inside the namespace, parsed (empty list on empty output)."""
        out = subprocess.run(
            ["ip", "-n", self.name, "-j", *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=10.0,
        ).stdout.strip()
        parsed: list[dict[str, Any]] = json.loads(out) if out else []
        return parsed

    def pids(self) -> list[int]:
        out = subprocess.run(
            ["ip", "netns", "pids", self.name],
            capture_output=True,
            text=True,
            check=False,
            timeout=10.0,
        ).stdout
        return [int(tok) for tok in out.split() if tok.isdigit()]

    def mac_of(self, ifname: str) -> str:
        links = self.ip_json("link", "show", "dev", ifname)
        return str(links[0]["address"])

    # Traffic probes (see tests/lab/traffic.py); any namespace can send them.
    def curl(self, url: str, **kwargs: Any) -> traffic.HttpResult:
        return traffic.curl(self, url, **kwargs)

    def ping(self, addr: str, count: int = 2, timeout: float = 3.0) -> traffic.PingResult:
        return traffic.ping(self, addr, count=count, timeout=timeout)

    def udp_probe(
        self, addr: str, port: int, payload: bytes = b"rf-probe", timeout: float = 2.0
    ) -> traffic.ProbeResult:
        return traffic.udp_probe(self, addr, port, payload=payload, timeout=timeout)

    def tcp_connect(
        self, addr: str, port: int, timeout: float = 2.0, payload: bytes | None = None
    ) -> traffic.ProbeResult:
        return traffic.tcp_connect(self, addr, port, timeout=timeout, payload=payload)

    def keepalive(
        self, addr: str, port: int, requests: Sequence[traffic.Request], timeout: float = 3.0
    ) -> traffic.KeepAliveResult:
        return traffic.keepalive(self, addr, port, requests, timeout=timeout)

    def raw_http(
        self, addr: str, port: int, data: bytes, timeout: float = 3.0
    ) -> traffic.ProbeResult:
        return traffic.raw_http(self, addr, port, data, timeout=timeout)

    def send_segments(
        self, addr: str, port: int, payload: bytes, **kwargs: Any
    ) -> traffic.CraftedResult:
        return traffic.send_segments(self, addr, port, payload, **kwargs)


# ---------------------------------------------------------------- safety checks


def _veth_peer_namespaces(ns: Netns) -> dict[str, str | None]:
    """Every link of `ns` except lo -> the namespace name its veth peer lives in.

    None means: not a veth with a peer in a named namespace (a dummy, a
    physical link, or a peer in an unnamed/host namespace).
    """
    ids = {int(e["nsid"]): str(e.get("name", "")) for e in ns.ip_json("netns", "list-id")}
    out: dict[str, str | None] = {}
    for link in ns.ip_json("-d", "link", "show"):
        name = str(link["ifname"])
        if name == "lo":
            continue
        kind = link.get("linkinfo", {}).get("info_kind")
        nsid = link.get("link_netnsid")
        if kind != "veth" or nsid is None:
            out[name] = None
        else:
            out[name] = ids.get(int(nsid)) or None
    return out


def check_links(ns: Netns, allowed: Mapping[str, str]) -> list[str]:
    """Problems if `ns` has links other than lo and `allowed` (ifname -> peer namespace)."""
    problems = []
    actual = _veth_peer_namespaces(ns)
    for name, peer_ns in actual.items():
        if name not in allowed:
            problems.append(f"{ns.name}: unexpected link {name!r}")
        elif peer_ns != allowed[name]:
            problems.append(
                f"{ns.name}: {name!r} peer is in {peer_ns!r}, expected {allowed[name]!r}"
            )
    problems.extend(f"{ns.name}: missing link {n!r}" for n in allowed if n not in actual)
    return problems


_NON_FORWARDING_TYPES = {"local", "broadcast", "multicast", "anycast", "unreachable",
                         "blackhole", "prohibit", "throw"}


def _forwarding_routes(ns: Netns) -> list[dict[str, Any]]:
    routes = []
    for family in ("-4", "-6"):
        for route in ns.ip_json(family, "route", "show", "table", "all"):
            if route.get("type", "unicast") in _NON_FORWARDING_TYPES:
                continue
            route["family"] = family
            routes.append(route)
    return routes


def _prefix(route: Mapping[str, Any]) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    dst = str(route.get("dst", ""))
    if dst == "default":
        return None
    return ipaddress.ip_network(dst, strict=False)


def check_routes(
    ns: Netns,
    allowed_prefixes: Sequence[str],
    allowed_default_via: Sequence[str] = (),
) -> list[str]:
    """Problems if `ns` routes anywhere but `allowed_prefixes`, or defaults elsewhere.

    Link-local fe80::/64 is always allowed (it never leaves the link).
    """
    allowed = {ipaddress.ip_network(p) for p in allowed_prefixes}
    allowed.add(ipaddress.ip_network("fe80::/64"))
    problems = []
    for route in _forwarding_routes(ns):
        prefix = _prefix(route)
        if prefix is None:
            via = str(route.get("gateway", ""))
            if via not in allowed_default_via:
                problems.append(f"{ns.name}: default route via {via or route.get('dev')!r}")
        elif prefix not in allowed:
            problems.append(f"{ns.name}: route to {prefix} not in the lab plan")
    return problems


def check_no_route_out(
    ns: Netns, probes: Sequence[str] = ("8.8.8.8", "2001:4860:4860::8888")
) -> list[str]:
    """Problems if the kernel of `ns` would route any of `probes` (internet addresses)."""
    problems = []
    for addr in probes:
        res = subprocess.run(
            ["ip", "-n", ns.name, "route", "get", addr],
            capture_output=True,
            text=True,
            check=False,
            timeout=10.0,
        )
        if res.returncode == 0:
            problems.append(f"{ns.name}: `ip route get {addr}` succeeds: {res.stdout.strip()}")
    return problems


def check_host_untouched(lab_names: Sequence[str]) -> list[str]:
    """Problems if the host namespace holds a veth whose peer is in a lab namespace."""
    host = subprocess.run(
        ["ip", "-j", "netns", "list-id"], capture_output=True, text=True, check=True, timeout=10.0
    ).stdout.strip()
    ids = {int(e["nsid"]): str(e.get("name", "")) for e in (json.loads(host) if host else [])}
    links_out = subprocess.run(
        ["ip", "-j", "-d", "link", "show", "type", "veth"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10.0,
    ).stdout.strip()
    problems = []
    for link in json.loads(links_out) if links_out else []:
        nsid = link.get("link_netnsid")
        if nsid is not None and ids.get(int(nsid)) in lab_names:
            problems.append(f"host namespace holds {link['ifname']!r}, peer of a lab namespace")
    return problems


# ---------------------------------------------------------------- stale cleanup

_LAB_NAME = re.compile(r"^(?P<prefix>.+?)(?P<pid>\d+)-(?P<tag>[0-9a-f]{6})-(?P<role>cli|gw|srv)$")


def _process_start_epoch(pid: int) -> float | None:
    """Wall-clock start time of `pid` (from /proc), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        btime = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration):
        return None
    # Field 22 (starttime, in clock ticks since boot) follows the ")" of comm.
    starttime = int(stat.rsplit(")", 1)[1].split()[19])
    return btime + starttime / os.sysconf("SC_CLK_TCK")


def cleanup_stale(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Delete lab namespaces left by crashed runs; returns the names deleted.

    Only names of the lab's own pattern (`<prefix><pid>-<hex6>-<role>`) are
    considered, and only if older than this process and their creator pid is
    gone (or is a newer process that reused the pid): a concurrent live run
    keeps its lab.
    """
    my_start = _process_start_epoch(os.getpid()) or time.time()
    deleted = []
    try:
        entries = sorted(NETNS_DIR.iterdir())
    except OSError:
        return []
    for entry in entries:
        m = _LAB_NAME.match(entry.name)
        if not m or m["prefix"] != prefix:
            continue
        try:
            created = entry.stat().st_mtime
        except OSError:
            continue
        if created >= my_start:
            continue
        owner_start = _process_start_epoch(int(m["pid"]))
        if owner_start is not None and owner_start <= created:
            continue  # its creator is still running
        res = subprocess.run(
            ["ip", "netns", "delete", entry.name],
            capture_output=True,
            text=True,
            check=False,
            timeout=10.0,
        )
        if res.returncode == 0:
            deleted.append(entry.name)
    return deleted


# ---------------------------------------------------------------- the lab


class Lab:
    """Three namespaces: client <-> gateway <-> server (see module docstring).

    `with Lab() as lab:` builds the lab, asserts isolation, and always tears
    it down (tracked processes, namespaces and thereby veths).
    """

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix
        self.tag = f"{prefix}{os.getpid()}-{secrets.token_hex(3)}"
        self.addr = ADDR
        self.tracker = ProcessTracker()
        self.client = Netns(f"{self.tag}-cli", self.tracker)
        self.gateway = Netns(f"{self.tag}-gw", self.tracker)
        self.server = Netns(f"{self.tag}-srv", self.tracker)
        self._created: list[str] = []
        self._server_app: ServerApp | None = None
        self.setup_seconds = 0.0

    @property
    def namespaces(self) -> tuple[Netns, Netns, Netns]:
        return (self.client, self.gateway, self.server)

    def __enter__(self) -> Self:
        reason = lab_unavailable_reason()
        if reason is not None:
            raise LabUnavailableError(reason)
        started = time.monotonic()
        try:
            self._build()
            self.assert_isolated()
        except BaseException:
            self.close()
            raise
        self.setup_seconds = time.monotonic() - started
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _ip_batch(self, ns: Netns, commands: Sequence[str]) -> None:
        """Run `ip` commands in `ns` as one `ip -batch` process (fewer spawns: faster bring-up)."""
        res = subprocess.run(
            ["ip", "-n", ns.name, "-batch", "-"],
            input="\n".join(commands) + "\n",
            capture_output=True,
            text=True,
            check=False,
            timeout=10.0,
        )
        if res.returncode != 0:
            raise RuntimeError(f"lab setup in {ns.name} failed: {res.stderr.strip()}")

    def _build(self) -> None:
        a = self.addr
        for ns in self.namespaces:
            subprocess.run(
                ["ip", "netns", "add", ns.name],
                capture_output=True,
                text=True,
                check=True,
                timeout=10.0,
            )
            self._created.append(ns.name)
            settings = [
                # No DAD: addresses must be usable at once (set before links exist).
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv6.conf.default.accept_ra=0",
            ]
            if ns is self.gateway:
                settings += [
                    "net.ipv4.ip_forward=1",
                    "net.ipv6.conf.all.forwarding=1",
                    "net.ipv6.conf.default.forwarding=1",
                ]
            ns.run(["sysctl", "-q", "-w", *settings], timeout=10.0)

        def addrs(ifname: str, *cidrs: str) -> list[str]:
            return [f"addr add {c} dev {ifname}{' nodad' if ':' in c else ''}" for c in cidrs]

        # Created inside the namespaces: no veth end ever touches the host.
        self._ip_batch(self.client, [
            "link set lo up",
            f"link add {CLIENT_IF} type veth peer name {GW_CLIENT_IF} netns {self.gateway.name}",
            *addrs(CLIENT_IF, f"{a.client_v4}/24", f"{a.client_v6}/64"),
        ])
        self._ip_batch(self.server, [
            "link set lo up",
            f"link add {SERVER_IF} type veth peer name {GW_SERVER_IF} netns {self.gateway.name}",
            *addrs(SERVER_IF, f"{a.server_v4}/24", f"{a.server_v6}/64",
                   f"{a.ioc_v4}/32", f"{a.ioc_v6}/128"),
        ])
        self._ip_batch(self.gateway, [
            "link set lo up",
            *addrs(GW_CLIENT_IF, f"{a.gw_client_v4}/24", f"{a.gw_client_v6}/64"),
            *addrs(GW_SERVER_IF, f"{a.gw_server_v4}/24", f"{a.gw_server_v6}/64"),
            f"link set {GW_CLIENT_IF} up",
            f"link set {GW_SERVER_IF} up",
            f"route add {a.ioc_v4}/32 via {a.server_v4}",
            f"route add {a.ioc_v6}/128 via {a.server_v6}",
        ])
        self._ip_batch(self.client, [
            f"link set {CLIENT_IF} up",
            f"route add default via {a.gw_client_v4}",
            f"route add ::/0 via {a.gw_client_v6}",
        ])
        self._ip_batch(self.server, [
            f"link set {SERVER_IF} up",
            f"route add default via {a.gw_server_v4}",
            f"route add ::/0 via {a.gw_server_v6}",
        ])

    def isolation_problems(self) -> list[str]:
        """Every reason the lab might reach beyond itself (empty when isolated)."""
        a = self.addr
        problems: list[str] = []
        problems += check_links(self.client, {CLIENT_IF: self.gateway.name})
        problems += check_links(
            self.gateway, {GW_CLIENT_IF: self.client.name, GW_SERVER_IF: self.server.name}
        )
        problems += check_links(self.server, {SERVER_IF: self.gateway.name})
        problems += check_routes(
            self.gateway,
            [a.client_net_v4, a.client_net_v6, a.server_net_v4, a.server_net_v6,
             f"{a.ioc_v4}/32", f"{a.ioc_v6}/128"],
        )
        problems += check_routes(
            self.server,
            [a.server_net_v4, a.server_net_v6, f"{a.ioc_v4}/32", f"{a.ioc_v6}/128"],
            allowed_default_via=[a.gw_server_v4, a.gw_server_v6],
        )
        problems += check_routes(
            self.client,
            [a.client_net_v4, a.client_net_v6],
            allowed_default_via=[a.gw_client_v4, a.gw_client_v6],
        )
        problems += check_no_route_out(self.gateway)
        problems += check_host_untouched([ns.name for ns in self.namespaces])
        return problems

    def assert_isolated(self) -> None:
        """Raise LabSafetyError unless the lab provably has no way out."""
        problems = self.isolation_problems()
        if problems:
            raise LabSafetyError("; ".join(problems))

    def start_server_app(self, timeout: float = 10.0) -> ServerApp:
        """Start the vulnerable metrics-ui app (and echo servers) in the server namespace.

        Idempotent: returns the running app if there is one.
        """
        if self._server_app is None or not self._server_app.alive():
            self._server_app = start_in(self.server, timeout=timeout)
        return self._server_app

    def close(self) -> None:
        """Stop tracked processes, sweep what is left in our namespaces, delete them."""
        self.tracker.stop_all()
        if self._server_app is not None:
            shutil.rmtree(self._server_app.log_path.parent, ignore_errors=True)
            self._server_app = None
        for name in reversed(self._created):
            ns = Netns(name)
            for pid in ns.pids():
                # Only processes inside our own namespaces (started by this lab's users).
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            subprocess.run(
                ["ip", "netns", "delete", name],
                capture_output=True,
                text=True,
                check=False,
                timeout=10.0,
            )
        self._created.clear()
