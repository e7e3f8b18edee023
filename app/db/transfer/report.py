"""What a copy or a verification found, shown as a table, as plain lines or as JSON."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, TypedDict, Unpack

if TYPE_CHECKING:
    from rich.console import Console

# rich is imported where a report is shown: the copy's worker processes import this
# module for its findings and show nothing (rich took 0.1 s of each worker's start).

# Findings that make the run fail; the others say what was done to keep every value.
FAILING = ("invariant", "schema", "unfit")


class TransferError(Exception):
    """Refused or failed; the message names what and where, never a password."""

    def __init__(self, message: str, report: Report | None = None) -> None:
        super().__init__(message)
        self.report = report


def describe(value: object) -> str:
    plain = isinstance(value, dt.date | dt.time | Decimal | uuid.UUID)
    text = str(value) if plain else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class Finding:
    kind: str  # widened converted nul-removed orphans fk-skipped index-skipped ... invariant
    table: str
    column: str | None
    message: str
    count: int = 0
    keys: list[object] = field(default_factory=list)  # key values, or tuples of them

    def line(self) -> str:
        where = f"{self.table}.{self.column}" if self.column else self.table
        keys = f" (keys {', '.join(describe(k) for k in self.keys)})" if self.keys else ""
        return f"{where}: {self.message}{keys}"


class _Extra(TypedDict, total=False):
    """What note() passes on to a Finding besides its kind, table, column and message."""

    count: int
    keys: list[object]


@dataclass
class Check:
    table: str
    source_rows: int
    target_rows: int
    source_sum: int
    target_sum: int
    differing_keys: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.source_rows == self.target_rows and self.source_sum == self.target_sum


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    actions: dict[str, str] = field(default_factory=dict)
    rows_copied: int = 0  # by this run; the checks count whole tables
    resumed: bool = False
    kept_schema: str | None = None

    def note(
        self,
        kind: str,
        table: str,
        message: str,
        *,
        column: str | None = None,
        **extra: Unpack[_Extra],
    ) -> None:
        self.findings.append(Finding(kind, table, column, message, **extra))

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks) and not any(f.kind in FAILING for f in self.findings)

    @property
    def total_rows(self) -> int:
        return sum(c.target_rows for c in self.checks if c.target_rows > 0)

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "rows_total": self.total_rows,
            "rows_copied_this_run": self.rows_copied,
            "resumed": self.resumed,
            "kept_schema": self.kept_schema,
            "tables": [
                {**asdict(c), "action": self.actions.get(c.table), "ok": c.ok} for c in self.checks
            ],
            "findings": [asdict(f) for f in self.findings],
        }


def to_json(report: Report, error: str | None = None) -> str:
    data = report.as_dict()
    if error is not None:
        data["ok"] = False
        data["error"] = error
    return json.dumps(data, default=str, ensure_ascii=False)


HEADINGS = ("table", "action", "source rows", "target rows", "checksum", "differing keys")


def _rows(report: Report) -> list[tuple[str, ...]]:
    return [
        (
            c.table,
            report.actions.get(c.table, ""),
            f"{c.source_rows:,}",
            f"{c.target_rows:,}",
            "match" if c.ok else "DIFFERS",
            ", ".join(c.differing_keys),
        )
        for c in report.checks
    ]


def _line(console: Console, text: str) -> None:
    console.print(text.rstrip(), markup=False, highlight=False, soft_wrap=True)


def render(report: Report, console: Console) -> None:
    rows = _rows(report)
    if console.is_terminal:
        from rich.table import Table as RichTable

        table = RichTable(title="transfer report")
        for heading in HEADINGS:
            table.add_column(heading)
        for row in rows:
            table.add_row(
                *row[:4], "[green]match[/]" if row[4] == "match" else "[red]DIFFERS[/]", row[5]
            )
        console.print(table)
    else:
        # Piped: every cell whole, no terminal width to fit.
        widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(HEADINGS)]
        for row in (HEADINGS, *rows):
            _line(console, "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    for check in report.checks:
        if not check.ok:
            keys = "; ".join(check.differing_keys) or "(none sampled)"
            _line(
                console,
                f"- {check.table}: {check.source_rows:,} rows vs {check.target_rows:,}, "
                f"content differs at keys: {keys}",
            )
    for finding in report.findings:
        _line(console, f"- {finding.line()}")
    if report.kept_schema:
        _line(
            console,
            f"the previous schema is kept as {report.kept_schema}; to switch back: "
            f"BEGIN; ALTER SCHEMA public RENAME TO public_copied; "
            f"ALTER SCHEMA {report.kept_schema} RENAME TO public; COMMIT;",
        )
