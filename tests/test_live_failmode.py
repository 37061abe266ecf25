"""What traffic does when the agent dies (kill -9 of main and workers) in the lab.

Fail-open (default, `--queue-bypass`): benign HTTP keeps flowing and the IOC
stays dropped, because the nft table outlives the process. Fail-closed:
queued traffic (HTTP to port 80) stops, traffic that is never queued
(ping) still flows. Each test removes the leftover table and xt chain.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.kernel.commands import CommandRunner
from agent.kernel.xt_queue import XtQueueRules
from tests.lab.demo import RunningAgent, start_agent
from tests.lab.netns import ADDR, Lab, python_env
from tests.lab.traffic import http_url
from tests.test_live_enforcement import write_live_config

pytestmark = pytest.mark.lab

LOOP_SECONDS = 6.0
KILL_AFTER = 2.0

# Runs in the client namespace: benign requests on fresh connections for a bounded time.
# One JSON line per request: start time (CLOCK_MONOTONIC is system-wide, so it compares
# with the test's), HTTP status or null.
_CURL_LOOP = """
import http.client, json, sys, time
addr, seconds = sys.argv[1], float(sys.argv[2])
end = time.monotonic() + seconds
while (now := time.monotonic()) < end:
    status = None
    try:
        conn = http.client.HTTPConnection(addr, 80, timeout=1.0)
        conn.request("GET", "/api/totals/last/2")
        status = conn.getresponse().status
        conn.close()
    except (OSError, http.client.HTTPException):
        pass
    print(json.dumps([now, time.monotonic(), status]), flush=True)
    time.sleep(0.02)
"""


@pytest.fixture(scope="module")
def served(lab: Lab) -> Lab:
    lab.start_server_app()
    return lab


def kill_agent_hard(lab: Lab, agent: RunningAgent) -> float:
    """SIGKILL the agent's whole process group (main and forked workers); returns when."""
    pgid = agent.proc.pid  # started with start_new_session: the main process leads the group
    workers = [p for p in lab.gateway.pids() if p != pgid]
    killed_at = time.monotonic()
    os.killpg(pgid, signal.SIGKILL)
    agent.proc.wait(timeout=5.0)
    deadline = time.monotonic() + 5.0
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in workers), "a worker survived kill -9 of the group"
    assert lab.gateway.pids() == []
    # Nothing removed the queue rules: what follows is the kernel's bypass (or not).
    assert XtQueueRules(CommandRunner.in_netns(lab.gateway.name)).installed()
    return killed_at


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def leftover_cleanup(served: Lab) -> Iterator[None]:
    """After kill -9 nothing removes the rules: delete the table and xt chain in the lab."""
    yield
    served.gateway.run(["nft", "delete", "table", "inet", "rustyflag"], check=False)
    XtQueueRules(CommandRunner.in_netns(served.gateway.name)).remove()
    assert "rustyflag" not in served.gateway.run(["nft", "list", "tables"]).stdout


def test_fail_open_benign_flows_after_kill_and_ioc_stays_dropped(
    served: Lab, tmp_path: Path, leftover_cleanup: None
) -> None:
    agent = start_agent(served, write_live_config(tmp_path), tmp_path / "out.jsonl")
    assert served.client.ping(ADDR.ioc_v4, count=1, timeout=1.0).received == 0
    loop = served.client.popen(
        [sys.executable, "-c", _CURL_LOOP, ADDR.server_v4, str(LOOP_SECONDS)],
        stdout=-1, text=True, env=python_env(),
    )
    time.sleep(KILL_AFTER)
    killed_at = kill_agent_hard(served, agent)
    out, _ = loop.communicate(timeout=LOOP_SECONDS + 10.0)
    results = [json.loads(line) for line in out.splitlines()]
    before = [s for _, end, s in results if end < killed_at]
    # A request in flight at the kill may lose a queued packet: its SYN (queued so the
    # inspector learns the stream start) comes back only after TCP's 1 s retransmission
    # timeout. Judge the requests that ended before the kill and began 0.5 s after it.
    after = [s for start, _, s in results if start > killed_at + 0.5]
    assert before and all(s == 200 for s in before), before
    assert len(after) >= 10 and all(s == 200 for s in after), after
    # The table outlived the process: the IOC is still dropped, in both directions.
    assert "rustyflag" in served.gateway.run(["nft", "list", "tables"]).stdout
    assert served.client.ping(ADDR.ioc_v4, count=1, timeout=1.0).received == 0
    reverse = served.server.run(
        ["ping", "-n", "-q", "-c", "1", "-W", "1", "-I", ADDR.ioc_v4, ADDR.client_v4],
        check=False,
    )
    assert reverse.returncode != 0
    fresh = served.client.curl(http_url(ADDR.server_v4, 80, "/health"))
    assert fresh.status == 200


def test_fail_closed_stops_queued_traffic_after_kill_only(
    served: Lab, tmp_path: Path, leftover_cleanup: None
) -> None:
    agent = start_agent(
        served, write_live_config(tmp_path, fail_closed=True), tmp_path / "out.jsonl"
    )
    assert served.client.curl(http_url(ADDR.server_v4, 80, "/health")).status == 200
    kill_agent_hard(served, agent)
    stalled = served.client.curl(
        http_url(ADDR.server_v4, 80, "/health"), max_time=2.0, connect_timeout=1.0
    )
    # The handshake is not queued (no payload); the request is, and nobody verdicts it.
    assert stalled.status is None and stalled.exit_code == 28, stalled
    assert served.client.ping(ADDR.server_v4, count=2, timeout=1.0).received == 2
    echo = served.client.tcp_connect(ADDR.server_v4, 7777, payload=b"not-queued")
    assert echo.ok and echo.reply == b"not-queued"
    assert served.client.ping(ADDR.ioc_v4, count=1, timeout=1.0).received == 0
