"""Planted bugs, one at a time, each in a scratch copy of the repository: which test catches it.

    uv run python bench/mutations.py              # every mutation, then bench/MUTATIONS.md
    uv run python bench/mutations.py --only NAME  # one (repeatable); its rows of the table
    uv run python bench/mutations.py --baseline   # the chosen tests on the unmutated copy
    uv run python bench/mutations.py --anchors    # every snippet still found once (no tests)

Each mutation replaces one exact snippet of one file (refused as a stale anchor unless
the snippet occurs exactly once), runs the tests it names with this checkout's .venv
(`python -m pytest -x -q -n 0`) in the copy, and records the first failing test, or
SURVIVED. The working tree is never modified: the copy is the tracked and untracked
files of this checkout (uncommitted edits included), made afresh for every mutation.
Exits 1 when a mutation survived, a snippet is stale or a run ended otherwise than
passing or failing.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "bench" / "MUTATIONS.md"
PYTHON = ROOT / ".venv" / "bin" / "python"
TIMEOUT = 1800.0
SURVIVED = "SURVIVED"
# The short summary's "FAILED tests/x.py::test[id] - why", not a captured "ERROR    log" line.
_FIRST_FAILURE = re.compile(r"^(?:FAILED|ERROR) (\S+\.py(?:::.*?)?)(?: - .*)?$", re.M)

PAUSED_REPLAY = (
    "tests/test_routing.py::test_paused_replay_excludes_replica_and_token_reads_see_writes"
)


@dataclass(frozen=True)
class Mutation:
    name: str
    kind: str
    what: str  # the bug, as a reviewer would describe it
    file: str
    old: str  # exact text, found exactly once
    new: str
    tests: tuple[str, ...]  # pytest arguments: files or test ids


MUTATIONS = [
    Mutation(
        "barber-elsewhere-pg",
        "rule",
        "the one-statement booking accepts a barber of another location",
        "app/queries/booking.py",
        '        "b.location_id = k.location_id",\n',
        '        "k.location_id = k.location_id",\n',
        (
            "tests/test_booking_rules.py::test_booking_rules_refuse_by_name"
            "[postgresql-barber elsewhere]",
        ),
    ),
    Mutation(
        "duration-within-a-minute",
        "rule",
        "a booking a minute longer or shorter than its service is accepted",
        "app/queries/booking.py",
        '"k.length_us = s.duration_minutes * 60000000.0",',
        '"abs(k.length_us - s.duration_minutes * 60000000.0) <= 60000000",',
        ("tests/test_booking_rules.py::test_booking_rules_refuse_by_name",),
    ),
    Mutation(
        "in-progress-frees-the-slot",
        "rule",
        "an appointment in progress no longer keeps its barber's time (SQLite's overlap check)",
        "app/db/models.py",
        'ACTIVE_APPOINTMENT_STATUSES = ("pending", "confirmed", "in_progress")',
        'ACTIVE_APPOINTMENT_STATUSES = ("pending", "confirmed")',
        ("tests/test_appointments.py::test_which_statuses_hold_the_barbers_time",),
    ),
    Mutation(
        "migration-overlap-unchecked",
        "rule",
        "a row a live migration brings back to SQLite is written over an overlapping booking",
        "app/db/live/reconcile.py",
        "        if booking.first_broken(verdicts) is not None:\n",
        "        if False:\n",
        ("tests/test_live_rollback.py::test_conflicting_changes_are_kept_and_reported",),
    ),
    Mutation(
        "overlap-counts-itself",
        "rule",
        "an appointment brought back by a live migration is refused for overlapping itself",
        "app/queries/booking.py",
        '"AND o.end_time > k.start_time AND o.id <> k.id)"',
        '"AND o.end_time > k.start_time)"',
        ("tests/test_live_rollback.py::test_sync_killed_while_reconciling_converges",),
    ),
    Mutation(
        "price-unchecked-pg",
        "rule",
        "the one-statement payment takes any amount for an appointment",
        "app/queries/payments.py",
        '        "s.price = k.amount",\n',
        '        "k.amount > 0",\n',
        ("tests/test_payments.py::test_amount_is_the_service_price[postgresql-0.01]",),
    ),
    Mutation(
        "completed-back-to-pending",
        "state move",
        "a completed appointment may be reopened as pending",
        "app/queries/appointments.py",
        '    "confirmed": ("pending",),\n',
        '    "pending": ("completed",),\n    "confirmed": ("pending",),\n',
        ("tests/test_appointments.py::test_status_changes_by_version",),
    ),
    Mutation(
        "refund-from-pending",
        "state move",
        "a pending payment may be refunded",
        "app/queries/payments.py",
        '    "refunded": ("completed",),\n',
        '    "refunded": ("pending", "completed"),\n',
        ("tests/test_payments.py::test_payment_transitions_refused",),
    ),
    Mutation(
        "money-number-hot",
        "shape",
        "the hot reads write money as a JSON number",
        "app/queries/json_sql.py",
        '        return Quoted(f"round({sql}, {scale})::text")\n',
        "        return Plain(sql)\n",
        ("tests/test_same_bytes.py",),
    ),
    Mutation(
        "money-float-schema",
        "shape",
        "the schema serializes money as a float",
        "app/schemas.py",
        'PlainSerializer(lambda v: f"{v:.2f}", return_type=str, when_used="json")',
        'PlainSerializer(lambda v: float(v), return_type=float, when_used="json")',
        ("tests/test_payments.py",),
    ),
    Mutation(
        "int64-bound",
        "bound",
        "ids one past BIGINT are accepted",
        "app/schemas.py",
        "INT64_MAX = 2**63 - 1\n",
        "INT64_MAX = 2**63\n",
        ("tests/test_appointments.py",),
    ),
    Mutation(
        "last-day-infinity",
        "bound",
        "9999-12-31 (PostgreSQL's infinity through asyncpg) is a day the API takes",
        "app/days.py",
        "LAST_DAY = dt.date(9999, 12, 30)\n",
        "LAST_DAY = dt.date(9999, 12, 31)\n",
        ("tests/test_analytics.py",),
    ),
    Mutation(
        "revenue-end-inclusive",
        "bound",
        "the hot revenue report counts a payment made at midnight after its last day",
        "app/queries/reads.py",
        "AND created_at >= $2 AND created_at < $3",
        "AND created_at >= $2 AND created_at <= $3",
        ("tests/test_analytics.py",),
    ),
    Mutation(
        "percent-encoded-shown",
        "redaction",
        "a password fully percent-encoded is not hidden",
        "app/redaction.py",
        '(quote(s, safe=""), quote(s), quote_plus(s))',
        "(quote(s), quote_plus(s))",
        ("tests/test_secrets.py::test_scrub_hides_every_kind_of_secret",),
    ),
    Mutation(
        "pgpassword-shown",
        "redaction",
        "PGPASSWORD's value is not hidden",
        "app/redaction.py",
        '_PASSWORD_VARIABLES = ("POSTGRES_PASSWORD", "PGPASSWORD")',
        '_PASSWORD_VARIABLES = ("POSTGRES_PASSWORD",)',
        ("tests/test_secrets.py::test_scrub_hides_every_kind_of_secret",),
    ),
    Mutation(
        "password-up-to-first-at",
        "redaction",
        "a URL's password is taken to end at its first '@'",
        "app/urls.py",
        'at, colon = rest.rfind("@"), rest.find(":")',
        'at, colon = rest.find("@"), rest.find(":")',
        ("tests/test_urls.py",),
    ),
    Mutation(
        "lag-limit-in-ms",
        "routing threshold",
        "the lag limit is read as milliseconds: a lagging replica keeps serving",
        "app/db/replicas.py",
        "if (replica.lag_seconds or 0.0) > self.settings.max_replica_lag_seconds:",
        "if (replica.lag_seconds or 0.0) > self.settings.max_replica_lag_seconds * 1000:",
        (PAUSED_REPLAY,),
    ),
    Mutation(
        "token-compared-backwards",
        "routing threshold",
        "a replica short of the consistency token serves the read",
        "app/db/router.py",
        "if (r.replay_lsn or 0) >= min_lsn]",
        "if (r.replay_lsn or 0) <= min_lsn]",
        (PAUSED_REPLAY,),
    ),
    Mutation(
        "back-copy-stops-at-full-batch",
        "transfer",
        "the copy back to SQLite ends after a batch that is exactly full",
        "app/db/transfer/to_sqlite.py",
        "finished = len(rows) < opts.batch_size",
        "finished = len(rows) <= opts.batch_size",
        ("tests/test_transfer.py::test_messy_sqlite_round_trip",),
    ),
    Mutation(
        "verify-skips-last-column",
        "transfer",
        "db verify's digest leaves out each table's last column",
        "app/db/transfer/verify.py",
        "    for column in source.columns:\n        other = target.column(column.name)",
        "    for column in source.columns[:-1]:\n        other = target.column(column.name)",
        ("tests/test_transfer.py::test_verify_names_the_changed_row_and_refusals",),
    ),
    Mutation(
        "agreement-changed-tables-only",
        "live verification",
        "the live agreement compares only the tables the source's change log names",
        "app/db/live/agreement.py",
        "        for table in capture.tables():\n            mine, theirs",
        "        for table in (t for t in capture.tables() if t.name in unsettled):\n"
        "            mine, theirs",
        ("tests/test_live_faults.py::test_failed_verification_switches_nothing",),
    ),
    Mutation(
        "idempotency-amount-ignored",
        "idempotency",
        "a retry with the same key and a different amount is answered as a replay",
        "app/operations/payments.py",
        "        same = (payment.user_id, payment.appointment_id, payment.location_id, "
        "payment.amount)\n"
        "        if same != (body.user_id, body.appointment_id, body.location_id, body.amount):\n",
        "        same = (payment.user_id, payment.appointment_id, payment.location_id)\n"
        "        if same != (body.user_id, body.appointment_id, body.location_id):\n",
        ("tests/test_payments.py::test_create_payment_and_replay",),
    ),
    Mutation(
        "money-number-rows",
        "shape",
        "the reads rendered from rows write money as a JSON number",
        "app/queries/shapes.py",
        "                out[key] = convert(value)\n",
        "                out[key] = float(value)\n",
        ("tests/test_read_shapes.py::test_appointments_payments_and_pages",),
    ),
    Mutation(
        "timestamp-without-z-rows",
        "shape",
        "the reads rendered from rows lose their timestamps' Z",
        "app/queries/shapes.py",
        "    return orjson.dumps(document, option=orjson.OPT_UTC_Z)\n",
        "    return orjson.dumps(document)\n",
        ("tests/test_read_shapes.py::test_appointments_payments_and_pages",),
    ),
    Mutation(
        "payment-currency-dropped-rows",
        "shape",
        "the reads rendered from rows lose the payments' currency",
        "app/queries/reads.py",
        "PAYMENT_SHAPE = Shape(PaymentRead)\n",
        'PAYMENT_SHAPE = Shape(PaymentRead, apart=("currency",))\n',
        ("tests/test_read_shapes.py::test_appointments_payments_and_pages",),
    ),
]


@dataclass
class Outcome:
    mutation: Mutation
    verdict: str  # "caught", SURVIVED, "stale anchor", "error"
    test: str  # the first failing test, or what went wrong
    seconds: float

    @property
    def ok(self) -> bool:
        return self.verdict == "caught"


def scratch_copy(into: Path) -> Path:
    """The checkout's tracked and untracked (not ignored) files, as they are on disk."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    tree = into / "repo"
    for name in (n.decode() for n in listed if n):
        source = ROOT / name
        if not source.is_file():  # deleted in the working tree, still in the index
            continue
        target = tree / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return tree


def anchor(mutation: Mutation, tree: Path = ROOT) -> str | None:
    """None when the snippet occurs exactly once in its file, else why it is stale."""
    path = tree / mutation.file
    if not path.is_file():
        return f"stale anchor: {mutation.file} does not exist"
    found = path.read_text().count(mutation.old)
    return (
        None if found == 1 else f"stale anchor: the snippet occurs {found} times in {mutation.file}"
    )


def plant(tree: Path, mutation: Mutation) -> str | None:
    """Apply the mutation; None, or why it cannot be applied."""
    refused = anchor(mutation, tree)
    if refused is None:
        path = tree / mutation.file
        path.write_text(path.read_text().replace(mutation.old, mutation.new))
    return refused


def run_tests(tree: Path, tests: tuple[str, ...]) -> tuple[int, str]:
    """pytest in the copy: subprocesses (the service, `python -m app`) import it too."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [str(PYTHON), "-m", "pytest", "-x", "-q", "-n", "0", "-p", "no:cacheprovider"]
    try:
        done = subprocess.run(
            [*command, *tests],
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return -1, f"no verdict within {TIMEOUT:.0f} s"
    return done.returncode, done.stdout + done.stderr


def verdict(code: int, output: str) -> tuple[str, str]:
    failure = _FIRST_FAILURE.search(output)
    if code == 0:
        return SURVIVED, ""
    if code == 1 and failure:
        return "caught", failure[1]
    tail = output.strip().splitlines()[-1:] or [""]
    return "error", f"pytest exited {code}: {tail[0][:200]}"


def mutate(mutation: Mutation) -> Outcome:
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mutation-") as scratch:
        tree = scratch_copy(Path(scratch))
        refused = plant(tree, mutation)
        if refused is not None:
            return Outcome(mutation, "stale anchor", refused, time.monotonic() - began)
        code, output = run_tests(tree, mutation.tests)
    found, test = verdict(code, output)
    return Outcome(mutation, found, test, time.monotonic() - began)


def baseline(mutations: list[Mutation]) -> int:
    """The chosen tests pass on the unmutated copy: a catch is the mutation's doing."""
    tests = tuple(dict.fromkeys(t for m in mutations for t in m.tests))
    with tempfile.TemporaryDirectory(prefix="mutation-baseline-") as scratch:
        code, output = run_tests(scratch_copy(Path(scratch)), tests)
    print(output.strip().splitlines()[-1] if output.strip() else f"pytest exited {code}")
    return 0 if code == 0 else 1


def row(outcome: Outcome) -> str:
    m = outcome.mutation
    caught = f"`{outcome.test}`" if outcome.ok else f"**{outcome.verdict}** {outcome.test}"
    cells = (f"`{m.name}`", m.kind, m.what, f"`{m.file}`", caught, f"{outcome.seconds:.0f}")
    return "| " + " | ".join(cells) + " |"


HEADER = """# Mutation run

Each row is one bug planted alone in a scratch copy of the repository, and the first
test that failed because of it (`bench/mutations.py`, which lists the mutations).
Rerun with `uv run python bench/mutations.py`, or one row with `--only NAME`.

| mutation | kind | the bug | file | caught by | s |
|---|---|---|---|---|---|
"""


def write_table(outcomes: list[Outcome]) -> None:
    """The table in MUTATIONS order; rows of mutations not run this time are kept as they were."""
    kept: dict[str, str] = {}
    if TABLE.exists():
        for line in TABLE.read_text().splitlines():
            if match := re.match(r"\| `([^`]+)` \|", line):
                kept[match[1]] = line
    kept |= {o.mutation.name: row(o) for o in outcomes}
    rows = [kept[m.name] for m in MUTATIONS if m.name in kept]
    TABLE.write_text(HEADER + "\n".join(rows) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", metavar="NAME", help="run this mutation")
    parser.add_argument("--list", action="store_true", help="name the mutations and stop")
    parser.add_argument("--baseline", action="store_true", help="run the tests unmutated")
    parser.add_argument(
        "--anchors", action="store_true", help="check every snippet is found once, run nothing"
    )
    args = parser.parse_args()
    names = {m.name for m in MUTATIONS}
    if len(names) != len(MUTATIONS):
        parser.error("two mutations share a name")
    unknown = set(args.only or ()) - names
    if unknown:
        parser.error(f"no mutation named {', '.join(sorted(unknown))}")
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.name:28} {m.kind:12} {m.what}")
        return 0
    if args.baseline:
        return baseline(chosen)
    if args.anchors:
        stale = [(m.name, why) for m in chosen if (why := anchor(m)) is not None]
        for name, why in stale:
            print(f"{name}: {why}")
        print(f"{len(chosen) - len(stale)} of {len(chosen)} anchors found once")
        return 1 if stale else 0
    outcomes = []
    for number, mutation in enumerate(chosen, 1):
        print(f"[{number}/{len(chosen)}] {mutation.name} ...", end=" ", flush=True)
        outcome = mutate(mutation)
        print(f"{outcome.verdict} {outcome.test} ({outcome.seconds:.0f} s)", flush=True)
        outcomes.append(outcome)
    write_table(outcomes)
    failed = [o for o in outcomes if not o.ok]
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} caught; table in {TABLE}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
