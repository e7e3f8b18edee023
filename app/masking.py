"""The secret values this process was given, and text with them masked.

Nothing of SQLAlchemy here: a worker's log formatters mask every line with it from the
first one, before the service is imported (app/logs.py), and `serve` collects the values
before it opens its port. app/redaction.py masks library text by the same rules.

Masked: the password of any URL, `password=` and `sslpassword=` values, and every
secret value given (URL passwords from the environment and the command line,
POSTGRES_PASSWORD, PGPASSWORD, the lines of the passfile or ~/.pgpass, API_TOKENS), as
is, percent-encoded and as JSON writes it.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import quote, quote_plus, unquote, unquote_plus

from app.urls import SECRET_PARAMETERS, password_and_query

HIDDEN = "***"
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][\w+.-]*://[^:/@\s]*:)[^@\s]*@")
# password=... and sslpassword=... in a query string or a key=value connection string.
_PARAMETER_PASSWORD = re.compile(r"(?i)(?P<head>\b(?:ssl)?password=)(?P<value>[^&\s]*)")
_URL_VARIABLES = ("DATABASE_URL", "REPLICA_URLS", "ANALYTICS_DATABASE_URL", "MIGRATION_TARGET_URL")
_PASSWORD_VARIABLES = ("POSTGRES_PASSWORD", "PGPASSWORD")


def mask(text: str, secrets: Sequence[str]) -> str:
    """`text` with URL passwords, password parameters and `secrets` (longest first) as ***."""
    text = _URL_PASSWORD.sub(rf"\g<head>{HIDDEN}@", text)
    text = _PARAMETER_PASSWORD.sub(_hide_parameter, text)
    for secret in secrets:
        text = text.replace(secret, HIDDEN)
    return text


def mask_target(target: str, secrets: Sequence[str]) -> str:
    """A request target as a log may show it: as it came, or, where a secret or a password
    shows in it once percent-decoded (a client may encode it any way it likes), decoded
    and masked. Nothing encoded (most targets): the line's own masking sees it as it is."""
    if "%" not in target and "+" not in target:
        return target
    for decoded in (unquote(target), unquote_plus(target)):
        shown = mask(decoded, secrets)
        if shown != decoded:
            return shown
    return target


def longest_first(secrets: Iterable[str]) -> tuple[str, ...]:
    """The order `mask` takes: a secret holding another is masked whole."""
    return tuple(sorted(secrets, key=len, reverse=True))


def _hide_parameter(match: re.Match[str]) -> str:
    value = match["value"]
    if value == HIDDEN or value.startswith(f"{HIDDEN}:"):  # hidden already (app.urls.redact)
        return match[0]
    return f"{match['head']}{HIDDEN}"


def _url_secrets(text: str) -> Iterable[str]:
    """The passwords of a URL or comma-separated URLs: userinfo, password parameters and
    the lines of a passfile parameter."""
    for part in {text, *text.split(",")}:
        try:
            password, query = password_and_query(part.strip())
        except ValueError:  # not a URL: nothing to take from it
            continue
        if password:
            yield password
        for key, value in query:
            if key.lower() in SECRET_PARAMETERS:
                yield value
            elif key.lower() == "passfile":
                yield from passfile_passwords(value)


def passfile_passwords(path: str | os.PathLike[str]) -> Iterable[str]:
    """The passwords a .pgpass file holds (host:port:database:user:password, \\ escapes)."""
    try:
        lines = Path(path).expanduser().read_text(errors="replace").splitlines()
    except OSError:
        return
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = re.split(r"(?<!\\):", line, maxsplit=4)
        if len(fields) == 5:
            yield fields[4].replace("\\:", ":").replace("\\\\", "\\")


def known_secrets() -> tuple[str, ...]:
    """Every secret value this process was given, by environment or command line, in
    every form it may be written in, longest first."""
    env = {k.upper(): v for k, v in os.environ.items()}
    found = {t.strip() for t in env.get("API_TOKENS", "").split(",")}
    found |= {env.get(name, "") for name in _PASSWORD_VARIABLES}
    for name in _URL_VARIABLES:
        found.update(_url_secrets(env.get(name, "")))
    # asyncpg reads the passfile PGPASSFILE names, else ~/.pgpass.
    found.update(passfile_passwords(env.get("PGPASSFILE") or "~/.pgpass"))
    for arg in sys.argv[1:]:
        found.update(_url_secrets(arg.partition("=")[2] if arg.startswith("--") else arg))
    forms = (
        lambda s: s,
        lambda s: quote(s, safe=""),
        quote,
        quote_plus,
        lambda s: json.dumps(s, ensure_ascii=False)[1:-1],
    )
    return longest_first({form(s) for s in found if s for form in forms} - {""})
