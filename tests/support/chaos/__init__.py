"""A chaos run of the whole platform: its processes under a supervisor that restarts them, on
a PostgreSQL and NATS of its own that it restarts too, while clients submit with retries;
then the checks of DESIGN.md's contracts (no lost work, one result per request_id, events
once and in order, webhooks at least once, outputs downloadable) and the figures.

Used by ``tests/e2e/test_chaos.py`` (small, in ``make test``) and ``bench/chaos.py``.
"""

from tests.support.chaos.fleet import ChaosFleet, ObjectStoreInfo
from tests.support.chaos.run import ChaosSettings, Figures, run_chaos

__all__ = ["ChaosFleet", "ChaosSettings", "Figures", "ObjectStoreInfo", "run_chaos"]
