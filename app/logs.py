"""One logging configuration: JSON lines (production) or readable text (development).

Every line carries the request id of the request it was logged for (None outside
requests) and the `extra` fields its call gave. python-json-logger does the JSON: it
keeps `extra` fields as they are, formats exceptions, and is the stdlib logging
formatter uvicorn, SQLAlchemy and Alembic already log through, which a structlog
pipeline would have to be bridged to. Every line is masked (app/masking.py): a client may
send a secret in its request target or as its request id, a library may print one.
"""

from __future__ import annotations

import logging
import logging.config
import os
import re
from collections.abc import Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.orjson import OrjsonFormatter

from app.masking import known_secrets, mask, mask_target

if TYPE_CHECKING:  # a worker imports this module before anything else (its log config)
    from app.config import Settings

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
REQUEST_ID_HEADER = b"x-request-id"
# Printable, no spaces or quotes, bounded: safe to echo and to put in a log line.
_SANE_ID = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,128}")

# Not `extra` fields: stdlib attributes, ours, and uvicorn's colored duplicate message.
_NOT_EXTRA = frozenset([*RESERVED_ATTRS, "taskName", "request_id", "color_message"])


class _NewIds:
    """New request ids as `uuid.uuid4().hex` writes them (version 4, RFC 4122 variant), from
    os.urandom read 4 KiB at a time: one system call per 256 ids instead of one each,
    and no UUID object. A forked worker starts with none of its parent's bytes."""

    _MASK = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
    _V4 = (0x4000 << 64) | (0x8000 << 48)

    def __init__(self) -> None:
        self._bytes = b""
        self._at = 0

    def forget(self) -> None:
        self._bytes, self._at = b"", 0

    def __call__(self) -> str:
        at = self._at
        if at >= len(self._bytes):
            self._bytes, at = os.urandom(4096), 0
        self._at = at + 16
        return f"{int.from_bytes(self._bytes[at : at + 16]) & self._MASK | self._V4:032x}"


new_request_id = _NewIds()
os.register_at_fork(after_in_child=new_request_id.forget)


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-ID when it is sane, else a new one."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            if _SANE_ID.fullmatch(value):
                return value.decode("ascii")
            break
    return new_request_id()


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class AccessFilter(logging.Filter):
    """uvicorn's access line: its request target masked however the client encoded a secret
    in it (app/masking.py), and with `fields`, client, method, path and status as fields."""

    def __init__(self, secrets: Sequence[str] = (), fields: bool = False) -> None:
        super().__init__()
        self.secrets, self.fields = tuple(secrets), fields

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            client, method, target, version, status = args
            if isinstance(target, str):
                args = record.args = (
                    client,
                    method,
                    mask_target(target, self.secrets),
                    version,
                    status,
                )
            if self.fields:
                record.client, record.method, record.path, _, record.status = args
        return True


class JsonFormatter(OrjsonFormatter):
    def __init__(self, secrets: Sequence[str] = ()) -> None:
        super().__init__(
            ["levelname", "name", "message", "request_id"],
            rename_fields={"levelname": "level", "name": "logger"},
            reserved_attrs=sorted(_NOT_EXTRA),
            timestamp=True,
        )
        self.secrets = tuple(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record), self.secrets)


class TextFormatter(logging.Formatter):
    """`time level logger [request id] message key=value ...` plus any traceback."""

    def __init__(self, secrets: Sequence[str] = ()) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s")
        self.secrets = tuple(secrets)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        extra = {k: v for k, v in record.__dict__.items() if k not in _NOT_EXTRA}
        if extra:
            line += " " + " ".join(f"{k}={v!r}" for k, v in extra.items())
        return line

    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record), self.secrets)


def config(settings: Settings) -> dict[str, object]:
    """A logging.config.dictConfig dictionary; uvicorn takes it as its log_config."""
    level = settings.log_level.upper()
    secrets = list(known_secrets())
    handler = {
        "class": "logging.StreamHandler",
        "formatter": settings.log_format,
        "filters": ["request_id"],
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": RequestIdFilter},
            "access": {
                "()": AccessFilter,
                "secrets": secrets,
                "fields": settings.log_format == "json",
            },
        },
        # Every line masked (app/masking.py): a client may send a secret in its request
        # target or X-Request-ID, a library may print one in an error.
        "formatters": {
            "json": {"()": JsonFormatter, "secrets": secrets},
            "text": {"()": TextFormatter, "secrets": secrets},
        },
        "handlers": {
            "default": handler,
            "access": {**handler, "filters": ["request_id", "access"]},
        },
        "root": {"handlers": ["default"], "level": level},
        "loggers": {
            # uvicorn's loggers write through the root's handler, its access log through
            # its own (for the fields); none keeps handlers of its own.
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": ["access"], "level": level, "propagate": False},
            # SQLAlchemy's echo would print statements; its errors reach us as exceptions.
            "sqlalchemy": {"level": "WARNING"},
        },
    }


def configure(settings: Settings) -> None:
    logging.config.dictConfig(config(settings))
