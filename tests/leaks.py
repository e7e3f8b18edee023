"""Secrets as real ones are (every character URLs and logs encode), and a judge that finds
them in any output without ever printing one."""

from __future__ import annotations

import secrets
from urllib.parse import quote, quote_plus

from tests.pgcluster import Hidden


def secret(prefix: str = "pw") -> Hidden:
    """A password with every character a URL, a log line or JSON encodes, encoded forms too
    (its repr, as pytest shows it, is ***)."""
    return Hidden(f"{prefix}-{secrets.token_hex(4)} @:/?#%&+=;,'\"\\ü密%40%2F%25")


def token(prefix: str = "tok") -> Hidden:
    """An API token with every character of `secret` a token can carry: not the comma that
    separates API_TOKENS, nothing beyond ASCII (an HTTP header's, as bearer tokens are)."""
    value = str.__str__(secret(prefix))
    return Hidden("".join(c for c in value if c != "," and c.isascii()))


def encodings(value: str) -> list[str]:
    """The forms a secret may take on its way out: as is, percent- and plus-encoded (also
    as a URL's userinfo is written, space and + kept), as JSON writes it (escaped quote and
    backslash, non-ASCII as \\u escapes) and as Python's repr does in a traceback."""
    import json

    forms = {value, quote(value, safe=""), quote(value), quote(value, safe=" +"), quote_plus(value)}
    forms |= {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    plain = str.__str__(value)  # a Hidden's own repr is ***
    forms |= {repr(plain)[1:-1], ascii(plain)[1:-1]}
    return sorted(forms)


def leaks(text: str, *values: str) -> list[str]:
    """Which secrets (by number and form, never by value) appear in `text`, and where."""
    found = []
    for number, value in enumerate(values):
        for form, encoded in enumerate(encodings(value)):
            if encoded in text:
                found.append(f"secret {number} (form {form}) at {text.index(encoded)}")
    return found
