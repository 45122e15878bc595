"""Settings of the workers tests/faults/test_worker_lost.py starts and kills: the suite's, with the times shortened.

Heartbeats every half second and a run stale after three, so a takeover is seen in seconds, not minutes; the broker's
visibility timeout from TEST_VISIBILITY_TIMEOUT (seconds), checked every second, so a test chooses whether a killed
worker's message comes back by redelivery (a few seconds) or only through recover_runs (an hour: never in the test).
Training fits only numpy candidates: no TensorFlow in these workers.
"""

import os

from tests.settings import *  # noqa: F403

CELERY_BROKER_TRANSPORT_OPTIONS = {
    **CELERY_BROKER_TRANSPORT_OPTIONS,  # noqa: F405
    "visibility_timeout": int(os.environ.get("TEST_VISIBILITY_TIMEOUT", "4")),
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
    # kombu's lock around that check: a worker killed while holding it (a few milliseconds a second here) would stop
    # every other worker's check for its expiry, five minutes by default.
    "unacked_mutex_expire": 2,
}
RECOMMENDATIONS = {
    **RECOMMENDATIONS,  # noqa: F405
    "RUN_HEARTBEAT_SECONDS": 0.5,
    "RUN_STALE_SECONDS": 3,
    "CANDIDATES": ["popularity", "item_knn"],
}
