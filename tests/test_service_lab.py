"""`rustyflag-agent run` as a service, in the namespace lab (root only).

The agent runs in the gateway namespace with a real NOTIFY_SOCKET (a datagram
socket this test owns); what reaches the IOC is counted ON THE SERVER side
(an nft counter inside the lab's server namespace), so "dropped" means the
packet never arrived, not that the agent said so.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab.demo import CAMPAIGN_DIR, read_events
from tests.lab.netns import ADDR, Lab, python_env

READY_TIMEOUT = 20.0
RELOAD_TIMEOUT = 10.0
# A second IOC for "added on reload": TEST-NET-2, a host route inside the lab only.
NEW_IOC = "198.51.100.77"
FILE_LINE = re.compile(r"\S+:\d+:")
UDP_BLASTER = """
import signal, socket, sys, time
sent, stop = 0, [False]
signal.signal(signal.SIGINT, lambda *_: stop.__setitem__(0, True))
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
deadline = time.monotonic() + float(sys.argv[2])
while not stop[0] and time.monotonic() < deadline:
    sock.sendto(b"rf-flood", (sys.argv[1], 9999))
    sent += 1
    if sent % 64 == 0:
        time.sleep(0.001)
print(sent)
"""


class NotifySocket:
    """The systemd side of sd_notify: a datagram socket bound at a path we own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[dict[str, str]] = []

    def _receive(self, timeout: float) -> dict[str, str] | None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        fields = dict(
            line.split("=", 1) for line in data.decode().splitlines() if "=" in line
        )
        self.messages.append(fields)
        return fields

    def wait_for(self, key: str, timeout: float) -> dict[str, str]:
        """The next message carrying `key` (earlier ones are kept in `messages`)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            fields = self._receive(left)
            if fields is not None and key in fields:
                return fields
        raise AssertionError(f"no {key} within {timeout:g}s; got {self.messages}")

    def states(self) -> list[str]:
        keys = ("READY", "RELOADING", "STOPPING")
        return [k for m in self.messages for k in keys if k in m]

    def close(self) -> None:
        self.sock.close()


class ServiceRun:
    """One `rustyflag-agent run` in the lab gateway, its config and intel in `workdir`."""

    def __init__(self, lab: Lab, workdir: Path, mode: str = "enforce") -> None:
        self.lab = lab
        self.workdir = workdir
        self.intel = workdir / "intel"
        self.intel.mkdir()
        shutil.copy(CAMPAIGN_DIR / "rusty-flag.md", self.intel)
        shutil.copy(CAMPAIGN_DIR / "rusty-flag.enrich.toml", self.intel)
        self.campaign = self.intel / "rusty-flag.md"
        self.config = workdir / "agent.toml"
        self.write_config(mode)
        self.output = workdir / "agent.jsonl"
        self.notify = NotifySocket(workdir / "notify.sock")
        self.proc: subprocess.Popen[Any] | None = None

    def write_config(
        self, mode: str, ports: tuple[int, ...] = (80, 8080), log_output: str = "stdout"
    ) -> None:
        self.config.write_text(
            f'mode = "{mode}"\n'
            f"[intel]\nsources = [{json.dumps(str(self.intel))}]\n"
            f"[http]\nports = {list(ports)}\n"
            '[nft]\nhooks = ["forward"]\n'
            f'[log]\noutput = {json.dumps(log_output)}\nformat = "json"\n'
        )

    def start(self, env: dict[str, str] | None = None) -> dict[str, str]:
        with self.output.open("w") as sink:
            self.proc = self.lab.gateway.popen(
                [sys.executable, "-m", "agent", "run", "--config", str(self.config)],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=python_env({"NOTIFY_SOCKET": str(self.notify.path), **(env or {})}),
            )
        try:
            return self.notify.wait_for("READY", READY_TIMEOUT)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nagent output:\n{self.tail()}") from None

    def tail(self) -> str:
        return self.output.read_text(errors="replace")[-3000:]

    def signal(self, signum: int) -> None:
        assert self.proc is not None and self.proc.poll() is None, self.tail()
        self.proc.send_signal(signum)

    def reload(self) -> tuple[dict[str, str], float]:
        """SIGHUP, then wait for RELOADING and the READY after it; returns READY and seconds."""
        started = time.monotonic()
        self.signal(signal.SIGHUP)
        reloading = self.notify.wait_for("RELOADING", RELOAD_TIMEOUT)
        assert int(reloading["MONOTONIC_USEC"]) > 0
        try:
            ready = self.notify.wait_for("READY", RELOAD_TIMEOUT)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nagent output:\n{self.tail()}") from None
        return ready, time.monotonic() - started

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        events = read_events(self.output)
        return [e for e in events if name is None or e.get("event") == name]

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            return None


@pytest.fixture
def service(lab: Lab, tmp_path: Path) -> Iterator[ServiceRun]:
    run = ServiceRun(lab, tmp_path)
    yield run
    run.stop()
    run.notify.close()
    # Nothing the agent installed outlives it.
    tables = lab.gateway.run(["nft", "list", "tables"], check=False).stdout
    assert "rustyflag" not in tables


class ServerCounter:
    """Packets that ARRIVE at the server namespace for one address (nft counter there)."""

    def __init__(self, lab: Lab, address: str, name: str) -> None:
        self.lab = lab
        self.name = name
        rules = (
            f"table inet {name} {{\n"
            f"  counter hits {{ }}\n"
            f"  chain input {{ type filter hook input priority -300; policy accept;\n"
            f"    ip daddr {address} counter name hits\n  }}\n}}\n"
        )
        lab.server.run(["nft", "-f", "-"], input=rules)

    def packets(self) -> int:
        out = self.lab.server.run(["nft", "-j", "list", "counter", "inet", self.name, "hits"])
        for item in json.loads(out.stdout)["nftables"]:
            if "counter" in item:
                return int(item["counter"]["packets"])
        raise AssertionError(f"counter not found: {out.stdout}")

    def remove(self) -> None:
        self.lab.server.run(["nft", "delete", "table", "inet", self.name], check=False)


@pytest.fixture
def ioc_counter(lab: Lab) -> Iterator[ServerCounter]:
    counter = ServerCounter(lab, ADDR.ioc_v4, "rftest_ioc")
    yield counter
    counter.remove()


def test_notify_ready_reloading_ready_stopping(service: ServiceRun) -> None:
    started = time.monotonic()
    ready = service.start()
    print(f"exec -> READY: {(time.monotonic() - started) * 1000:.0f} ms")
    assert "mode enforce" in ready["STATUS"] and "queue backend" in ready["STATUS"]
    service.reload()
    assert service.stop() == 0
    service.notify.wait_for("STOPPING", 2.0)
    assert service.notify.states() == ["READY", "RELOADING", "READY", "STOPPING"]
    reload = service.events("reload")
    assert len(reload) == 1 and reload[0]["old_intel_version"] == reload[0]["new_intel_version"]
    assert reload[0]["indicators_added"] == 0 and reload[0]["duration_ms"] > 0


def test_50_sighups_under_flood_nothing_reaches_the_ioc(
    lab: Lab, service: ServiceRun, ioc_counter: ServerCounter
) -> None:
    lab.start_server_app()
    service.start()
    # Bounded in count and time; only lab addresses.
    flood = lab.client.popen(
        ["timeout", "40", "ping", "-q", "-i", "0.001", "-c", "200000", ADDR.ioc_v4],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    # ping -f slows to ~100/s without replies; a UDP blaster adds volume (bounded: 40 s).
    blaster = lab.client.popen(
        [sys.executable, "-c", UDP_BLASTER, ADDR.ioc_v4, "40"],
        stdout=subprocess.PIPE, text=True,
    )
    curl_loop = lab.client.popen(
        ["timeout", "40", "bash", "-c",
         f"for i in $(seq 1 400); do echo try; curl -s -o /dev/null --max-time 0.2 "
         f"http://{ADDR.ioc_v4}:80/health; done"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    durations = []
    try:
        time.sleep(0.3)
        for _ in range(50):
            durations.append(service.reload()[1])
        time.sleep(0.3)
    finally:
        flood.send_signal(signal.SIGINT)  # `timeout` passes it on: ping prints its summary
        blaster.send_signal(signal.SIGINT)
        curl_loop.terminate()
        flood_out, _ = flood.communicate(timeout=5)
        blasted, _ = blaster.communicate(timeout=5)
        curl_out, _ = curl_loop.communicate(timeout=5)
    sent = re.search(r"(\d+) packets transmitted", flood_out)
    assert sent and int(sent[1]) >= 100, flood_out  # the flood really ran
    assert int(blasted.strip() or 0) >= 1000, blasted
    assert ioc_counter.packets() == 0
    assert curl_out.count("try") >= 3, curl_out  # curl attempts ran throughout
    assert len(service.events("reload")) == 50
    assert not service.events("reload_failed")
    # Still deciding: kernel drops keep being logged and the inspector still sees HTTP.
    assert service.events("decision") or any(
        e.get("source") == "nflog" for e in service.events()
    )
    marker = time.time()
    res = lab.client.curl(f"http://{ADDR.server_v4}:80/metrics-ui/server/srv.go")
    assert res.status is not None
    time.sleep(0.5)
    late = [e for e in service.events() if e.get("source") == "nfqueue"
            and _epoch(e.get("timestamp")) >= marker - 1]
    assert late, service.tail()
    print(f"flood: {sent[1]} pings + {blasted.strip()} UDP sent; reload SIGHUP->READY: median {sorted(durations)[25] * 1000:.0f} ms, "
          f"max {max(durations) * 1000:.0f} ms")


def _epoch(stamp: object) -> float:
    from datetime import datetime

    if not isinstance(stamp, str):
        return 0.0
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def test_broken_campaign_keeps_old_state(
    lab: Lab, service: ServiceRun, ioc_counter: ServerCounter
) -> None:
    service.start()
    good = service.campaign.read_text()
    # A clobbered title: the page no longer matches its enrichment file (fatal).
    service.campaign.write_text(good.replace("# Rusty Flag - Cyber Threat Intelligence",
                                             "# Rusty Fl", 1))
    ready, _ = service.reload()
    assert "mode enforce" in ready["STATUS"]
    failures = service.events("reload_failed")
    assert failures and all(FILE_LINE.match(f["problem"]) for f in failures), failures
    assert not service.events("reload")
    assert not lab.client.ping(ADDR.ioc_v4, count=3, timeout=1.0).ok
    assert ioc_counter.packets() == 0
    # A missing file (dangling link) is a failure too, not an exception that kills it.
    service.campaign.unlink()
    service.campaign.symlink_to(service.workdir / "gone.md")
    service.reload()
    assert len(service.events("reload_failed")) > len(failures)
    service.campaign.unlink()
    service.campaign.write_text(good)
    service.reload()
    assert len(service.events("reload")) == 1
    assert not lab.client.ping(ADDR.ioc_v4, count=2, timeout=1.0).ok
    assert ioc_counter.packets() == 0


def test_added_ioc_is_dropped_within_a_second(lab: Lab, service: ServiceRun) -> None:
    # A second IOC host on the server, routed by the gateway: inside the lab only.
    lab.server.run(["ip", "addr", "add", f"{NEW_IOC}/32", "dev", "srv0"])
    lab.gateway.run(["ip", "route", "add", f"{NEW_IOC}/32", "via", ADDR.server_v4])
    counter = ServerCounter(lab, NEW_IOC, "rftest_new")
    try:
        service.start()
        assert lab.client.ping(NEW_IOC, count=1, timeout=2.0).ok
        text = service.campaign.read_text()
        row = "1 | [78.135.73.140](https://vuldb.com/?ip.78.135.73.140)"
        at = text.index(row)
        line_end = text.index("\n", at)
        service.campaign.write_text(
            text[: line_end + 1] + f"2 | {NEW_IOC} | - | Unknown | High\n" + text[line_end + 1:]
        )
        _, seconds = service.reload()
        assert seconds < 1.0
        before = counter.packets()
        assert not lab.client.ping(NEW_IOC, count=3, timeout=1.0).ok
        assert counter.packets() == before
        reload = service.events("reload")[-1]
        assert reload["indicators_added"] == 1 and reload["indicators_removed"] == 0
        assert reload["old_intel_version"] != reload["new_intel_version"]
        print(f"new IOC enforced {seconds * 1000:.0f} ms after SIGHUP")
    finally:
        counter.remove()
        lab.gateway.run(["ip", "route", "del", f"{NEW_IOC}/32"], check=False)
        lab.server.run(["ip", "addr", "del", f"{NEW_IOC}/32", "dev", "srv0"], check=False)


def test_enforce_dry_run_switch_by_reload(
    lab: Lab, service: ServiceRun, ioc_counter: ServerCounter
) -> None:
    service.start()
    assert not lab.client.ping(ADDR.ioc_v4, count=2, timeout=1.0).ok
    assert ioc_counter.packets() == 0
    service.write_config("dry-run")
    ready, _ = service.reload()
    assert "mode dry-run" in ready["STATUS"]
    assert lab.client.ping(ADDR.ioc_v4, count=2, timeout=2.0).ok
    passed = ioc_counter.packets()
    assert passed >= 2
    time.sleep(0.5)
    assert any(e.get("action") == "would_drop" or e.get("verdict") == "would_drop"
               for e in service.events()), service.tail()
    service.write_config("enforce")
    ready, _ = service.reload()
    assert "mode enforce" in ready["STATUS"]
    assert not lab.client.ping(ADDR.ioc_v4, count=2, timeout=1.0).ok
    assert ioc_counter.packets() == passed


def test_sighup_burst_coalesces(service: ServiceRun) -> None:
    service.start()
    for _ in range(20):
        service.signal(signal.SIGHUP)
    deadline = time.monotonic() + RELOAD_TIMEOUT
    # Quiet for 1 s after the last READY: the burst is done.
    while time.monotonic() < deadline:
        try:
            service.notify.wait_for("READY", 1.0)
        except AssertionError:
            break
    reloads = len(service.events("reload"))
    assert 1 <= reloads < 20
    assert service.notify.states()[-1] == "READY"
    assert service.proc is not None and service.proc.poll() is None


def test_start_failure_after_rules_leaves_no_rules(lab: Lab, service: ServiceRun) -> None:
    # Another program holds queue 1: the agent's second worker cannot bind it.
    blocker = lab.gateway.popen(
        [sys.executable, "-c",
         "import time\nfrom netfilterqueue import NetfilterQueue\n"
         "q = NetfilterQueue()\nq.bind(1, lambda p: p.accept())\nprint('bound', flush=True)\n"
         "time.sleep(30)\n"],
        stdout=subprocess.PIPE, text=True, env=python_env(),
    )
    try:
        assert blocker.stdout is not None and blocker.stdout.readline().strip() == "bound"
        with service.output.open("w") as sink:
            proc = lab.gateway.popen(
                [sys.executable, "-m", "agent", "run", "--config", str(service.config)],
                stdout=sink, stderr=subprocess.STDOUT,
                env=python_env({"NOTIFY_SOCKET": str(service.notify.path)}),
            )
        assert proc.wait(timeout=30) != 0
        out = service.tail()
        assert "queue 1" in out and "did not start" in out, out
        assert service.events("start_failed"), out
        assert "READY" not in service.notify.states()
        # Nothing left that would stall or drop traffic.
        assert "rustyflag" not in lab.gateway.run(["nft", "list", "tables"]).stdout
        mangle = lab.gateway.run(["iptables-nft", "-t", "mangle", "-S"], check=False).stdout
        assert "NFQUEUE" not in mangle, mangle
        assert lab.client.ping(ADDR.server_v4, count=1, timeout=2.0).ok
    finally:
        blocker.terminate()
        blocker.wait(timeout=5)


def test_only_cap_net_admin_and_no_new_privs_suffice(lab: Lab, service: ServiceRun) -> None:
    """What the unit grants (CapabilityBoundingSet=CAP_NET_ADMIN, NoNewPrivileges): root
    whose bounding set holds only CAP_NET_ADMIN; nft/iptables-nft children inherit it."""
    lab.start_server_app()
    with service.output.open("w") as sink:
        service.proc = lab.gateway.popen(
            ["setpriv", "--bounding-set=-all,+net_admin", "--no-new-privs", "--",
             sys.executable, "-m", "agent", "run", "--config", str(service.config)],
            stdout=sink, stderr=subprocess.STDOUT,
            env=python_env({"NOTIFY_SOCKET": str(service.notify.path)}),
        )
    service.notify.wait_for("READY", READY_TIMEOUT)
    status = Path(f"/proc/{service.proc.pid}/status").read_text()
    caps = {k: v.strip() for k, _, v in (line.partition(":") for line in status.splitlines())}
    assert caps["CapEff"] == caps["CapBnd"] == "0000000000001000"  # bit 12: CAP_NET_ADMIN
    assert caps["NoNewPrivs"] == "1"
    assert not lab.client.ping(ADDR.ioc_v4, count=2, timeout=1.0).ok
    res = lab.client.curl(f"http://{ADDR.server_v4}:80/metrics-ui/server/srv.go")
    assert res.status is not None
    service.reload()
    assert service.events("reload") and not service.events("reload_failed")
    time.sleep(0.5)
    assert any(e.get("source") == "nfqueue" for e in service.events()), service.tail()
    assert service.stop() == 0


def test_world_writable_config_is_refused(lab: Lab, service: ServiceRun) -> None:
    service.config.chmod(0o666)
    with service.output.open("w") as sink:
        proc = lab.gateway.popen(
            [sys.executable, "-m", "agent", "run", "--config", str(service.config)],
            stdout=sink, stderr=subprocess.STDOUT, env=python_env(),
        )
    assert proc.wait(timeout=20) != 0
    out = service.tail()
    assert "writable by all users" in out and "steers the firewall" in out, out
    assert "rustyflag" not in lab.gateway.run(["nft", "list", "tables"]).stdout


def test_watchdog_pings_while_serving(service: ServiceRun) -> None:
    # As systemd sets it for WatchdogSec=0.4s: the agent pings every half period.
    service.start(env={"WATCHDOG_USEC": "400000"})
    started = time.monotonic()
    pings = 0
    while time.monotonic() - started < 1.5:
        service.notify.wait_for("WATCHDOG", 1.0)
        pings += 1
    assert pings >= 5


def _nfqueue_decisions(service: ServiceRun, port: int) -> int:
    return sum(1 for e in service.events("decision")
               if e.get("source") == "nfqueue" and e.get("dest_port") == port)


def test_port_change_applies_on_reload(lab: Lab, service: ServiceRun) -> None:
    lab.start_server_app()
    service.start()
    path = "/metrics-ui/server/srv.go"  # an IOA file: flagged when inspected
    assert lab.client.curl(f"http://{ADDR.server_v4}:8080{path}").status is not None
    time.sleep(0.5)
    assert _nfqueue_decisions(service, 8080) >= 1
    service.write_config("enforce", ports=(80,))
    service.reload()
    before = _nfqueue_decisions(service, 8080)
    assert lab.client.curl(f"http://{ADDR.server_v4}:8080{path}").status is not None
    assert lab.client.curl(f"http://{ADDR.server_v4}:80{path}").status is not None
    time.sleep(0.5)
    assert _nfqueue_decisions(service, 8080) == before  # no longer queued or inspected
    assert _nfqueue_decisions(service, 80) >= 1


def test_log_file_reopened_on_sigusr1_by_main_and_workers(lab: Lab, service: ServiceRun) -> None:
    lab.start_server_app()
    log_file = service.workdir / "agent.log"
    service.write_config("enforce", log_output=str(log_file))
    service.start()
    deadline = time.monotonic() + 5  # READY=1 goes out just before the `ready` line
    while not any(e.get("event") == "ready" for e in read_events(log_file)):
        assert time.monotonic() < deadline, service.tail()
        time.sleep(0.05)
    rotated = log_file.rename(service.workdir / "agent.log.1")
    service.signal(signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while not log_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    # Main: the reopen event and NFLOG drops; workers (told over their pipe, a loop
    # turn later): nfqueue decisions. Retried: a busy machine delays the workers.
    wanted = {"log_reopened", "nfqueue", "nflog"}
    seen: set[str] = set()
    deadline = time.monotonic() + 10
    while seen != wanted and time.monotonic() < deadline:
        lab.client.curl(f"http://{ADDR.server_v4}:80/metrics-ui/server/srv.go")
        lab.client.ping(ADDR.ioc_v4, count=1, timeout=0.5)
        time.sleep(0.3)
        fresh = read_events(log_file)
        seen = {str(e.get("source", e.get("event"))) for e in fresh} & wanted
    assert seen == wanted, service.tail()
    assert not any(e.get("source") == "nfqueue" for e in read_events(rotated))


def test_flushed_ruleset_comes_back(
    lab: Lab, service: ServiceRun, ioc_counter: ServerCounter
) -> None:
    """What `systemctl restart nftables` does to us (`flush ruleset`): the agent sees
    its table deleted on the nf_tables multicast group and puts the rules back."""
    lab.start_server_app()
    service.start()
    blaster = lab.client.popen(
        [sys.executable, "-c", UDP_BLASTER, ADDR.ioc_v4, "20"], stdout=subprocess.PIPE, text=True
    )
    gaps = []
    try:
        time.sleep(0.3)
        for _ in range(3):
            flushed = time.monotonic()
            lab.gateway.run(["nft", "flush", "ruleset"])
            while time.monotonic() - flushed < 5:
                if lab.gateway.run(["nft", "list", "table", "inet", "rustyflag"],
                                   check=False).returncode == 0:
                    break
            gaps.append(time.monotonic() - flushed)
            time.sleep(0.3)
    finally:
        blaster.send_signal(signal.SIGINT)
        blasted, _ = blaster.communicate(timeout=5)
    leaked = ioc_counter.packets()
    print(f"ruleset back after flush: {[round(g * 1000) for g in gaps]} ms (nft poll included); "
          f"{leaked} of {blasted.strip()} UDP packets reached the IOC")
    assert max(gaps) < 1.0
    assert len(service.events("rules_restored")) == 3
    # Everything is back: IOC dropped, queue rules inspect HTTP again.
    before = ioc_counter.packets()
    assert not lab.client.ping(ADDR.ioc_v4, count=2, timeout=1.0).ok
    assert ioc_counter.packets() == before
    marker = len([e for e in service.events("decision") if e.get("source") == "nfqueue"])
    lab.client.curl(f"http://{ADDR.server_v4}:80/metrics-ui/server/srv.go")
    time.sleep(0.5)
    assert len([e for e in service.events("decision") if e.get("source") == "nfqueue"]) > marker
    # Our own reloads (which replace the table) are not mistaken for a flush.
    service.write_config("dry-run")
    service.reload()
    time.sleep(0.3)
    assert len(service.events("rules_restored")) == 3
