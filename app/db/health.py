"""Health probes of the primary, the replicas and the data (nothing here knows HTTP)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

from sqlalchemy import text

from app.db.errors import refusal
from app.db.replicas import Replica
from app.db.router import DatabaseRouter

# Integrity checks are scans: bounded in time, and shared by every probe for a while.
INTEGRITY_TIMEOUT_SECONDS = 5.0
INTEGRITY_CACHE_SECONDS = 30.0

_INTEGRITY_CHECKS = {
    # Appointments whose client does not exist.
    "orphaned_appointments": """
        SELECT count(*) FROM appointments a
        LEFT JOIN users u ON u.id = a.user_id
        WHERE u.id IS NULL
    """,
    # Payments whose user or appointment does not exist.
    "orphaned_payments": """
        SELECT count(*) FROM payments p
        LEFT JOIN users u ON u.id = p.user_id
        LEFT JOIN appointments a ON a.id = p.appointment_id
        WHERE u.id IS NULL OR (p.appointment_id IS NOT NULL AND a.id IS NULL)
    """,
    # A payment for an appointment is paid by that appointment's client.
    "user_appointment_consistency": """
        SELECT count(*) FROM payments p
        JOIN appointments a ON a.id = p.appointment_id
        WHERE p.user_id <> a.user_id
    """,
}


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def describe_error(exc: BaseException) -> str:
    """What a probe may say about a failure: never the text, which can carry a DSN.

    A refusal by its reason (login_refused, no_such_database, no_connect_privilege)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    return refusal(exc) or type(exc).__name__


async def check_primary(router: DatabaseRouter) -> dict[str, object]:
    """SELECT 1 on the primary within CONNECT_TIMEOUT."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(router.settings.connect_timeout):
            async with router.probe_engine.connect() as conn:
                value = await conn.scalar(text("SELECT 1"))
        healthy = value == 1
        error = None if healthy else "unexpected answer"
    except Exception as exc:
        healthy, error = False, describe_error(exc)
    result: dict[str, object] = {
        "status": "healthy" if healthy else "unhealthy",
        "response_time": round(time.perf_counter() - started, 6),
        "timestamp": _now(),
    }
    if error is not None:
        result["error"] = error
    return result


def _serving(replica: Replica) -> bool:
    # A probe marks a replica down a moment before rotation catches up: report the former.
    return replica.up and replica.in_rotation


def _replica_status(replica: Replica) -> str:
    if not replica.up:
        return "unhealthy"
    return "healthy" if replica.in_rotation else "degraded"


def consistency_report(replica: Replica) -> dict[str, object]:
    """The replica's sampled comparisons with the primary (app/db/consistency.py)."""
    state = replica.consistency
    diverged = state.diverged
    return {
        "ratio": state.ratio,
        "window_rows": state.window_rows,
        "sampled_rows": state.rows_total,
        "mismatched_rows": state.mismatched_total,
        "seconds_since_check": (
            None if state.checked_at is None else round(time.monotonic() - state.checked_at, 3)
        ),
        "diverged": None
        if diverged is None
        else {
            "table": diverged.table,
            "first_key": diverged.first_key,
            "last_key": diverged.last_key,
            "keys": diverged.keys[:10],
            "rows": len(diverged.keys),
        },
    }


def _replica_entry(r: Replica) -> dict[str, object]:
    return {
        "replica_id": r.index,
        "name": r.name,
        "status": _replica_status(r),
        "in_rotation": _serving(r),
        "reason": r.reason,
        "response_time": r.response_time,
        "lag_seconds": r.lag_seconds,
        "lag_bytes": r.lag_bytes,
        "timeline": r.timeline,
        "consistency": consistency_report(r),
        "timestamp": r.checked_at.isoformat() if r.checked_at else None,
    }


def replicas_report(router: DatabaseRouter) -> dict[str, object]:
    """The replica monitor's last view; no query of its own."""
    entries = [_replica_entry(r) for r in router.replicas]
    serving = sum(1 for r in router.replicas if _serving(r))
    if not entries:
        status = "no_replicas"  # every read goes to the primary, by design
    elif serving == len(entries):
        status = "healthy"
    elif serving:
        status = "degraded"
    else:
        status = "unavailable"
    analytics = router.analytics_replica
    analytics_entry = None if analytics is None else _replica_entry(analytics)
    access = router.access.get("analytics")
    if analytics_entry is not None and access is not None:
        analytics_entry["connection"] = access.state()  # its last connection attempt
    report: dict[str, object] = {
        "status": status,
        "max_lag_seconds": router.settings.max_replica_lag_seconds,
        "in_rotation": serving,
        "replicas": entries,
        "analytics": analytics_entry,
        "primary_timeline": router.monitor.primary.timeline,
        "timestamp": _now(),
    }
    return report


async def _run_integrity(router: DatabaseRouter) -> dict[str, object]:
    checks: list[dict[str, object]] = []
    session = router.session("read")
    try:
        async with asyncio.timeout(INTEGRITY_TIMEOUT_SECONDS):
            async with session.begin():
                if not router.sqlite:
                    # Reads run in autocommit; this one wants a transaction: one snapshot
                    # for the three checks, and a server-side limit that ends with it.
                    await session.connection(
                        execution_options={"isolation_level": "REPEATABLE READ"}
                    )
                    # The server stops the scan a little before this task would give up.
                    limit_ms = int(INTEGRITY_TIMEOUT_SECONDS * 800)
                    await session.execute(text(f"SET LOCAL statement_timeout = {limit_ms}"))
                for name, sql in _INTEGRITY_CHECKS.items():
                    count = int(await session.scalar(text(sql)) or 0)
                    checks.append(
                        {
                            "check": name,
                            "status": "passed" if count == 0 else "failed",
                            "count": count,
                        }
                    )
        overall = "healthy" if all(c["status"] == "passed" for c in checks) else "issues_found"
        error = None
    except Exception as exc:
        overall, error = "error", describe_error(exc)
    finally:
        await asyncio.shield(session.close())
    result: dict[str, object] = {
        "status": overall,
        "integrity_checks": checks,
        "replica_consistency": {r.name: consistency_report(r) for r in router.monitor.members},
        "timestamp": _now(),
    }
    if overall == "healthy" and any(r.consistency.diverged for r in router.monitor.members):
        result["status"] = "issues_found"
    if error is not None:
        result["error"] = error
    return result


class IntegrityCheck:
    """The seed's integrity checks on a read session, run at most once per cache period."""

    def __init__(self, router: DatabaseRouter, ttl: float = INTEGRITY_CACHE_SECONDS) -> None:
        self.router = router
        self.ttl = ttl
        self._lock = asyncio.Lock()
        self._result: dict[str, object] | None = None
        self._at = 0.0

    async def result(self) -> dict[str, object]:
        # Concurrent probes wait for the one run in progress instead of starting their own.
        async with self._lock:
            if self._result is None or time.monotonic() - self._at >= self.ttl:
                self._result = await _run_integrity(self.router)
                self._at = time.monotonic()
            return self._result
