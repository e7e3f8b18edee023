"""Prometheus metrics of the data layer (names from the optimization strategy)."""

from __future__ import annotations

import os
import tempfile

from prometheus_client import Counter, Gauge

ROUTING = Counter(
    "database_routing_total", "Sessions handed out, by intent and target", ["intent", "target"]
)
PRIMARY_READS = Counter(
    "database_primary_reads_total", "Reads served by the primary, by reason", ["reason"]
)
REPLICA_UP = Gauge(
    "database_replica_up",
    "1 when the replica answered its last probe",
    ["replica"],
    multiprocess_mode="livemostrecent",
)
REPLICA_LAG = Gauge(
    "database_replica_lag_seconds",
    "Replay lag of the replica at its last probe",
    ["replica"],
    multiprocess_mode="livemostrecent",
)
REPLICA_IN_ROTATION = Gauge(
    "database_replica_in_rotation",
    "1 when routing sends reads to the replica",
    ["replica"],
    multiprocess_mode="livemostrecent",
)


def prepare_multiprocess(workers: int) -> None:
    """Several workers share one scrape through prometheus_client's multiprocess mode."""
    if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bookedbarber-metrics-")
