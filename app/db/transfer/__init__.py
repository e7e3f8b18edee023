"""SQLite <-> PostgreSQL data transfer: copy, verify, report."""

from app.db.transfer.copy import CopyOptions, Report, TransferError, copy, render, verify

__all__ = ["CopyOptions", "Report", "TransferError", "copy", "render", "verify"]
