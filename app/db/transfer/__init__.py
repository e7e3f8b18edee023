"""SQLite <-> PostgreSQL data transfer: copy, verify, report."""

from app.db.transfer.copy import copy
from app.db.transfer.options import CopyOptions, Rules
from app.db.transfer.report import Finding, Report, TransferError, render, to_json
from app.db.transfer.verify import verify

__all__ = [
    "CopyOptions",
    "Finding",
    "Report",
    "Rules",
    "TransferError",
    "copy",
    "render",
    "to_json",
    "verify",
]
