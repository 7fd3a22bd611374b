"""What is secret: the one redaction policy of instrumentation and exporter (stdlib only).

Command lines, hyperparameters and configurations are recorded so that a run can be repeated,
but they often carry credentials (``--api-key=sk-...``, ``hub_token``, a database password, a
git remote with a token). provtel records such values as :data:`REDACTED` wherever it records
them (span and resource attributes, hence PROV documents, OTLP and the receiver's archive):

- a **name looks secret** when it, or one of its dotted parts, matches one of
  :data:`DEFAULT_PATTERNS` (``*key*``, ``*token*``, ``*secret*``, ``*password*``, ``*passwd*``,
  ``*credential*``), case-insensitively, or a pattern of the comma-separated
  ``OTEL_PYTHON_PROVTEL_REDACT`` variable (shell-style wildcards, e.g. ``*dsn*,wandb_*``);
  ``-`` and ``_`` are the same character, so ``--api-key`` matches ``api_key``;
- the **value** of such a name is replaced whole (:func:`redact_value`), whatever its type;
- in a **command line** (:func:`redact_argv`), the value of ``--name=value``, ``--name value``
  and ``name=value`` (Hydra overrides) is replaced when the name looks secret;
- a **URL** (:func:`redact_url`, :func:`redact_text` for URLs inside free text) loses its
  user information (everything before the last ``@`` of the authority) and its credential
  query parameters (``access_token``, ``sig``, ``X-Amz-Signature``, and any parameter whose
  name looks secret).

The policy is deliberately blunt: a hyperparameter named ``max_tokens`` is redacted too, since
a name cannot tell a count from a credential; rename it, or read it from the script.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

#: What a redacted value is recorded as.
REDACTED = "[redacted]"

OTEL_PYTHON_PROVTEL_REDACT = "OTEL_PYTHON_PROVTEL_REDACT"
"""Comma-separated extra name patterns whose values are redacted (shell-style wildcards,
case-insensitive), added to :data:`DEFAULT_PATTERNS`."""

#: Names whose values are never recorded (matched case-insensitively, ``-`` read as ``_``).
DEFAULT_PATTERNS: tuple[str, ...] = (
    "*key*",
    "*token*",
    "*secret*",
    "*password*",
    "*passwd*",
    "*credential*",
)

#: Query parameters that carry credentials even though their names do not look secret.
CREDENTIAL_PARAMETERS = frozenset(
    {
        "sig",
        "signature",
        "auth",
        "authorization",
        "pass",
        "pwd",
        "code",
        "session",
        "sessionid",
        "jwt",
        "x-amz-signature",
        "x-goog-signature",
    }
)

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")


def _normal(name: str) -> str:
    return name.strip().lstrip("-+~").lower().replace("-", "_")


@lru_cache(maxsize=8)
def _compiled(extra: str) -> re.Pattern[str]:
    patterns = [*DEFAULT_PATTERNS, *(p for p in (s.strip() for s in extra.split(",")) if p)]
    return re.compile("|".join(fnmatch.translate(_normal(p)) for p in patterns))


def patterns() -> tuple[str, ...]:
    """The name patterns in force: the defaults and ``OTEL_PYTHON_PROVTEL_REDACT``'s."""
    extra = os.environ.get(OTEL_PYTHON_PROVTEL_REDACT, "")
    return (*DEFAULT_PATTERNS, *(p.strip() for p in extra.split(",") if p.strip()))


@lru_cache(maxsize=4096)
def _is_secret(name: str, extra: str) -> bool:
    matcher = _compiled(extra)
    normal = _normal(name)
    return bool(matcher.match(normal)) or any(
        matcher.match(part) for part in normal.split(".") if part
    )


def is_secret(name: str) -> bool:
    """Whether values named ``name`` (``api_key``, ``--api-key``, ``wandb.api_key``) are secret."""
    return _is_secret(str(name), os.environ.get(OTEL_PYTHON_PROVTEL_REDACT, ""))


def redact_value(name: str, value: Any) -> Any:
    """:data:`REDACTED` when ``name`` looks secret; otherwise ``value``, with URLs cleaned."""
    if is_secret(name):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, (list, tuple)) and any(isinstance(v, str) for v in value):
        return type(value)(redact_text(v) if isinstance(v, str) else v for v in value)
    return value


def redact_attributes(attributes: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``attributes`` with the values of secret-looking names redacted.

    With a ``prefix`` (``ml.hparam.``), only keys under it are judged, by the part after it,
    so that the prefix itself never matters; other keys are copied unchanged.
    """
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        if prefix and not key.startswith(prefix):
            out[key] = value
        else:
            out[key] = redact_value(key[len(prefix) :], value)
    return out


def redact_argv(argv: Iterable[str]) -> list[str]:
    """A command line with the values of secret-looking options redacted, and URLs cleaned.

    ``--api-key=sk-1`` becomes ``--api-key=[redacted]``, ``--api-key sk-1`` becomes
    ``--api-key [redacted]``, a Hydra override ``db.password=x`` becomes
    ``db.password=[redacted]``. The program and option names are kept.
    """
    out: list[str] = []
    hide_next = False
    for arg in map(str, argv):
        if hide_next and not (arg.startswith("-") and len(arg) > 1):
            out.append(REDACTED)
            hide_next = False
            continue
        hide_next = False
        name, eq, _value = arg.partition("=")
        if eq and name and "://" not in name and is_secret(name):
            out.append(f"{name}={REDACTED}")
        elif arg.startswith("--") and not eq and is_secret(arg):
            out.append(arg)
            hide_next = True  # --api-key VALUE
        else:
            out.append(redact_text(arg))
    return out


def _credential_parameter(name: str) -> bool:
    return name.lower() in CREDENTIAL_PARAMETERS or is_secret(name)


def redact_url(url: str) -> str:
    """``url`` without user information and credential query parameters.

    ``https://oauth2:glpat-AB@CD@gitlab.com/x.git`` becomes ``https://gitlab.com/x.git`` (the
    authority keeps only what follows its last ``@``); ``?access_token=...&page=2`` becomes
    ``?page=2``. Text that is not a URL is returned unchanged.
    """
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    end = len(rest)
    for mark in "/?#":
        found = rest.find(mark)
        if found != -1:
            end = min(end, found)
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        authority = authority.rsplit("@", 1)[1]
    cleaned = f"{scheme}://{authority}{tail}"
    if "?" not in tail and ";" not in tail:
        return cleaned
    try:
        parts = urlsplit(cleaned)
    except ValueError:  # an unparseable authority (bad port, brackets): drop the query
        return cleaned.split("?", 1)[0]
    if not parts.query:
        return cleaned
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in pairs if not _credential_parameter(k)]
    if len(kept) == len(pairs):
        return cleaned
    return urlunsplit(parts._replace(query=urlencode(kept)))


def redact_text(text: str) -> str:
    """``text`` with every URL in it cleaned by :func:`redact_url`."""
    if "://" not in text:
        return text
    return _URL.sub(lambda m: redact_url(m.group(0)), text)
