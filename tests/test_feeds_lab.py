"""A gateway restarted while its TAXII server is down enforces the feed's cached copy.

The feed is fetched from medallion on the host's loopback, the server is
stopped, then `rustyflag-agent run` starts in the lab gateway namespace with
only that feed configured. What reaches the IOC is counted in the server
namespace (root only; skipped without the namespace lab).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.config import FeedSettings, IntelSettings, Settings
from agent.intel.feeds import FeedManager, FeedStatus
from tests.feeds_servers import COLLECTION_ID, READER, campaign_objects, medallion
from tests.helpers import REPO
from tests.lab.netns import ADDR, Lab
from tests.test_service_lab import ServerCounter, ServiceRun

pytestmark = pytest.mark.lab

RUSTY_FLAG_STIX = REPO / "tests" / "data" / "intel" / "stix-rusty-flag.json"
READER_ENV = {"RUSTYFLAG_FEED_FLEET_USER": READER[0], "RUSTYFLAG_FEED_FLEET_PASSWORD": READER[1]}


def test_agent_restarted_with_the_feed_server_down_enforces_the_cache(
    lab: Lab, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    with medallion(tmp_path / "medallion") as server:
        server.add(campaign_objects(RUSTY_FLAG_STIX))
        feed = FeedSettings(
            name="fleet", url=server.api_root, kind="taxii", collection=COLLECTION_ID, timeout=2
        )
        settings = Settings(intel=IntelSettings(sources=[], feeds=[feed], state_dir=str(state_dir)))
        [outcome] = FeedManager(settings, environ=READER_ENV).refresh()
        assert outcome.status is FeedStatus.UPDATED, outcome.problems
        api_root = server.api_root
    # The server is gone; only the cache remains.
    assert FeedManager(settings, environ=READER_ENV).refresh()[0].status is FeedStatus.FAILED

    workdir = tmp_path / "agent"
    workdir.mkdir()
    service = ServiceRun(lab, workdir)
    service.config.write_text(
        'mode = "enforce"\n'
        f"[intel]\nsources = []\nstate_dir = {json.dumps(str(state_dir))}\n"
        "[[intel.feeds]]\n"
        f'name = "fleet"\nkind = "taxii"\nurl = {json.dumps(api_root)}\n'
        f'collection = "{COLLECTION_ID}"\n'
        "[http]\nports = [80, 8080]\n"
        '[nft]\nhooks = ["forward"]\n'
        '[log]\noutput = "stdout"\nformat = "json"\n'
    )
    counter = ServerCounter(lab, ADDR.ioc_v4, "rftest_feed")
    try:
        # Control: without the agent the IOC answers, and the counter sees it.
        assert lab.client.ping(ADDR.ioc_v4, count=1, timeout=2.0).ok
        reached = counter.packets()
        assert reached > 0
        ready = service.start()
        assert "1 campaigns" in ready["STATUS"], ready
        assert not lab.client.ping(ADDR.ioc_v4, count=3, timeout=1.0).ok
        assert counter.packets() == reached
        applied = service.events("rules_applied")
        assert applied and applied[-1]["exact_v4"] >= 1
    finally:
        service.stop()
        service.notify.close()
        counter.remove()
    tables = lab.gateway.run(["nft", "list", "tables"], check=False).stdout
    assert "rustyflag" not in tables
