"""Database URLs as shown to people: the password hidden.

SQLAlchemy's URL parser is imported when a URL is first shown, not with this module:
`db copy` imports it before starting its worker processes, which read no URL."""

from __future__ import annotations


def redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
