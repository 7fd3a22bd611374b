"""Upload run documents to yProvStore, the yProv service that keeps PROV documents under PIDs.

``provtel upload RUN --to URL`` (or ``OTEL_PYTHON_PROVTEL_UPLOAD_URL`` for an automatic upload
when a run ends) sends the run's ``prov.json`` the way yProvStore's API expects it:

1. **Log in**: ``POST <URL>/login`` with ``{"email", "password"}`` returns a bearer token; a
   token given directly (``--token``, ``OTEL_PYTHON_PROVTEL_UPLOAD_TOKEN``) skips this step.
2. **Create**: ``POST <URL>/documents`` with the document as the multipart field
   ``document_file`` (``application/json``) and, for a run derived from an earlier uploaded run,
   ``?parent_document_pid=<PID>``. The answer holds the new ``pid``, ``version`` and
   ``storage_url``.

Server errors (5xx) and network failures (refused connection, timeout) are retried with
exponential backoff (``Retry-After`` honoured); 400, 401, 403 and 404 stop at once with an
:class:`UploadError` that says what to fix. The result (or the failure) is written to
``upload.json`` in the run folder (:data:`RECORD`): nothing is lost when the store is down, the
run stays on disk and ``provtel upload`` can be rerun; a document already uploaded unchanged to
the same store is not sent twice (``--force`` sends it again).

**Parent documents.** Without an explicit parent PID, the parent is found from lineage: when
this run loaded a checkpoint (a ``provml:Model`` entity it ``used``, with its SHA-256 digest)
that an earlier run under the same output directory generated and uploaded to the same store,
that run's PID is the parent. ``upload.json`` keeps the digests of the checkpoints a run
generated for that purpose.

Only the standard library is used (``urllib``, a hand-built ``multipart/form-data`` body): the
exporter gains no dependency. Credentials are never written to disk or logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from provtel.exporter.environment_variables import (
    OTEL_PYTHON_PROVTEL_UPLOAD_EMAIL,
    OTEL_PYTHON_PROVTEL_UPLOAD_PARENT_PID,
    OTEL_PYTHON_PROVTEL_UPLOAD_PASSWORD,
    OTEL_PYTHON_PROVTEL_UPLOAD_TIMEOUT,
    OTEL_PYTHON_PROVTEL_UPLOAD_TOKEN,
    OTEL_PYTHON_PROVTEL_UPLOAD_URL,
)

logger = logging.getLogger(__name__)

#: The record of uploads in a run folder: ``{"uploads": {<store URL>: {...}}}``.
RECORD = "upload.json"
DOCUMENT = "prov.json"
DEFAULT_ATTEMPTS = 4
#: Tries per request of the automatic upload at exit: a store that is down delays exit ~3 s.
AUTOMATIC_ATTEMPTS = 3
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_BACKOFF_S = 1.0
_MAX_BACKOFF_S = 30.0
_DIGEST_KEY = "otel:ml.checkpoint.digest"


class UploadError(Exception):
    """An upload that did not succeed; ``status`` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        #: Seconds the server asked us to wait (``Retry-After``), if it did.
        self.retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Credentials:
    """How to authenticate: a bearer token, or an email and password to log in with."""

    token: str | None = None
    email: str | None = None
    password: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Credentials:
        """The credentials in ``OTEL_PYTHON_PROVTEL_UPLOAD_{TOKEN,EMAIL,PASSWORD}``."""
        env = os.environ if env is None else env
        return cls(
            token=env.get(OTEL_PYTHON_PROVTEL_UPLOAD_TOKEN) or None,
            email=env.get(OTEL_PYTHON_PROVTEL_UPLOAD_EMAIL) or None,
            password=env.get(OTEL_PYTHON_PROVTEL_UPLOAD_PASSWORD) or None,
        )

    def __repr__(self) -> str:  # never show secrets in logs or tracebacks
        return f"Credentials(token={'***' if self.token else None}, email={self.email!r})"


@dataclass(frozen=True, slots=True)
class UploadResult:
    """What yProvStore answered for a stored document."""

    pid: str
    storage_url: str | None
    version: int | None = None
    parent_document_pid: str | None = None
    owner_email: str | None = None
    #: True when the document had already been uploaded and was not sent again.
    skipped: bool = False


@dataclass(slots=True)
class _Policy:
    attempts: int = DEFAULT_ATTEMPTS
    timeout: float = DEFAULT_TIMEOUT_S
    backoff: float = DEFAULT_BACKOFF_S
    sleep: Callable[[float], None] = field(default=time.sleep)


# -- public API ---------------------------------------------------------------------------------


def document_path(run: str | os.PathLike[str]) -> Path:
    """The ``prov.json`` of a run folder (or ``run`` itself when it is a file)."""
    path = Path(run)
    if path.is_dir():
        path = path / DOCUMENT
    if not path.is_file():
        raise FileNotFoundError(f"no PROV document at {path}")
    return path


def upload_run(
    run: str | os.PathLike[str],
    url: str,
    credentials: Credentials,
    parent_pid: str | None = None,
    *,
    force: bool = False,
    attempts: int = DEFAULT_ATTEMPTS,
    timeout: float = DEFAULT_TIMEOUT_S,
    backoff: float = DEFAULT_BACKOFF_S,
    sleep: Callable[[float], None] = time.sleep,
) -> UploadResult:
    """Upload the document of ``run`` to the yProvStore at ``url``; record it in ``upload.json``.

    ``parent_pid`` None: the parent found from lineage (see the module documentation), if any.
    Raises :class:`UploadError` (recorded in ``upload.json`` first) or
    :class:`FileNotFoundError`.
    """
    doc_path = document_path(run)
    base = _base_url(url)
    data = doc_path.read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    record_path = doc_path.parent / RECORD
    previous = _read_record(record_path).get(base)
    if not force and previous and previous.get("pid") and previous.get("document_sha256") == digest:
        logger.info("%s: already uploaded to %s as %s", doc_path, base, previous["pid"])
        return UploadResult(
            pid=str(previous["pid"]),
            storage_url=previous.get("storage_url"),
            version=previous.get("version"),
            parent_document_pid=previous.get("parent_document_pid"),
            skipped=True,
        )
    document = _parse(data, doc_path)
    if parent_pid is None:
        parent_pid = find_parent_pid(doc_path, base, document)
    policy = _Policy(max(1, attempts), timeout, backoff, sleep)
    entry: dict[str, Any] = {
        "document_sha256": digest,
        "generated_checkpoints": sorted(_generated_digests(document)),
        "parent_document_pid": parent_pid,
        "time": _now(),
    }
    try:
        token = credentials.token or _login(base, credentials, policy)
        result = _create(base, token, data, doc_path.name, parent_pid, policy)
    except UploadError as exc:
        entry.update(status="failed", error=str(exc), http_status=exc.status)
        _write_record(record_path, base, entry)
        raise
    entry.update(status="uploaded", **{k: v for k, v in asdict(result).items() if k != "skipped"})
    _write_record(record_path, base, entry)
    return result


def upload_after_run(document: Path, env: Mapping[str, str] | None = None) -> UploadResult | None:
    """Upload a just-written document when ``OTEL_PYTHON_PROVTEL_UPLOAD_URL`` is set.

    Called by the exporter when a run's document is written; never raises (a failure is one
    warning line, recorded in ``upload.json``, and ``provtel upload`` can retry it later).
    """
    env = os.environ if env is None else env
    url = env.get(OTEL_PYTHON_PROVTEL_UPLOAD_URL)
    if not url:
        return None
    try:
        timeout = float(env.get(OTEL_PYTHON_PROVTEL_UPLOAD_TIMEOUT) or DEFAULT_TIMEOUT_S)
    except ValueError:
        timeout = DEFAULT_TIMEOUT_S
    try:
        result = upload_run(
            document,
            url,
            Credentials.from_env(env),
            env.get(OTEL_PYTHON_PROVTEL_UPLOAD_PARENT_PID) or None,
            attempts=AUTOMATIC_ATTEMPTS,
            timeout=timeout,
        )
    except Exception as exc:  # never let an upload failure disturb the end of the run
        logger.warning(
            "provtel: upload of %s to %s failed: %s (the run is kept; retry with "
            "`provtel upload %s --to %s`)",
            document,
            _base_url(url),
            exc,
            document.parent,
            _base_url(url),
        )
        return None
    # The CLI's line, on stderr like the end-of-run summary: the user wants the PID.
    sys.stderr.write(
        f"provtel: {document} uploaded to {_base_url(url)}: PID {result.pid}"
        + (f", {result.storage_url}" if result.storage_url else "")
        + "\n"
    )
    return result


def find_parent_pid(doc_path: Path, base: str, document: dict[str, Any]) -> str | None:
    """The PID of the earlier uploaded run that generated a checkpoint this run loaded."""
    used = _used_digests(document)
    if not used:
        return None
    root = doc_path.parent.parent
    candidates: list[tuple[float, str]] = []
    for record_path in _sibling_records(root, doc_path.parent):
        entry = _read_record(record_path).get(base)
        if not entry or entry.get("status") != "uploaded" or not entry.get("pid"):
            continue
        if used & set(entry.get("generated_checkpoints") or ()):
            candidates.append((record_path.stat().st_mtime, str(entry["pid"])))
    return max(candidates)[1] if candidates else None


# -- HTTP ---------------------------------------------------------------------------------------


def _login(base: str, credentials: Credentials, policy: _Policy) -> str:
    if not credentials.email or not credentials.password:
        raise UploadError(
            "no credentials: give a token (--token or OTEL_PYTHON_PROVTEL_UPLOAD_TOKEN) or an "
            "email and password (--email / OTEL_PYTHON_PROVTEL_UPLOAD_EMAIL and "
            "OTEL_PYTHON_PROVTEL_UPLOAD_PASSWORD)"
        )
    body = json.dumps({"email": credentials.email, "password": credentials.password}).encode()
    status, answer = _request(
        base + "/login", body, {"Content-Type": "application/json"}, policy, "log in"
    )
    token = answer.get("access_token") if isinstance(answer, dict) else None
    if not isinstance(token, str) or not token:
        raise UploadError(f"{base}/login answered {status} without an access_token", status)
    return token


def _create(
    base: str, token: str, data: bytes, filename: str, parent_pid: str | None, policy: _Policy
) -> UploadResult:
    boundary = "provtel-" + secrets.token_hex(16)
    body = _multipart(boundary, "document_file", filename, "application/json", data)
    url = base + "/documents"
    if parent_pid:
        url += "?" + urllib.parse.urlencode({"parent_document_pid": parent_pid})
    headers = {
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Authorization": f"Bearer {token}",
    }
    status, answer = _request(url, body, headers, policy, "store the document")
    if not isinstance(answer, dict) or not answer.get("pid"):
        raise UploadError(f"{base}/documents answered {status} without a pid", status)
    version = answer.get("version")
    return UploadResult(
        pid=str(answer["pid"]),
        storage_url=answer.get("storage_url"),
        version=version if isinstance(version, int) else None,
        parent_document_pid=answer.get("parent_document_pid"),
        owner_email=answer.get("owner_email"),
    )


def _multipart(boundary: str, name: str, filename: str, content_type: str, data: bytes) -> bytes:
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode()


def _request(
    url: str, body: bytes, headers: dict[str, str], policy: _Policy, what: str
) -> tuple[int, Any]:
    """POST with retries on 5xx and network errors; return (status, parsed JSON answer)."""
    last: UploadError | None = None
    for attempt in range(1, policy.attempts + 1):
        try:
            return _post_once(url, body, headers, policy.timeout, what)
        except UploadError as exc:
            if not exc.retryable:
                raise
            last = exc
            if attempt == policy.attempts:
                break
            delay = exc.retry_after
            if delay is None:
                delay = min(_MAX_BACKOFF_S, policy.backoff * 2 ** (attempt - 1))
            logger.info(
                "%s (attempt %d of %d); retrying in %.1f s", exc, attempt, policy.attempts, delay
            )
            policy.sleep(delay)
    assert last is not None
    raise UploadError(
        f"{last} (gave up after {policy.attempts} attempts)", last.status, retryable=True
    )


def _post_once(
    url: str, body: bytes, headers: dict[str, str], timeout: float, what: str
) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    shown = _shown(url)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = response.status
            payload = response.read()
    except urllib.error.HTTPError as exc:
        detail = _detail(exc.read())
        error = _http_error(exc.code, shown, what, detail)
        retry_after = exc.headers.get("Retry-After") if exc.headers else None
        if retry_after is not None:
            with contextlib.suppress(ValueError):
                error.retry_after = max(0.0, min(_MAX_BACKOFF_S, float(retry_after)))
        raise error from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UploadError(f"cannot {what} at {shown}: {reason}", None, retryable=True) from None
    try:
        return status, json.loads(payload) if payload else None
    except ValueError:
        raise UploadError(
            f"{shown} answered {status} with a body that is not JSON", status
        ) from None


def _http_error(status: int, url: str, what: str, detail: str) -> UploadError:
    tail = f": {detail}" if detail else ""
    if status == 401:
        hint = (
            "the credentials were refused (wrong email or password)"
            if url.endswith("/login")
            else "the token was refused (expired or invalid): log in again or give a new token"
        )
        return UploadError(f"cannot {what} at {url}: 401 Unauthorized, {hint}{tail}", status)
    if status == 403:
        return UploadError(
            f"cannot {what} at {url}: 403 Forbidden, this account may not write there "
            f"(or no token was sent){tail}",
            status,
        )
    if status == 400:
        return UploadError(
            f"cannot {what} at {url}: 400 Bad Request, the store refused it{tail}", status
        )
    if status == 404:
        hint = (
            "no user is registered with this email"
            if url.endswith("/login")
            else "the parent document PID does not exist (or the URL is not a yProvStore)"
        )
        return UploadError(f"cannot {what} at {url}: 404 Not Found, {hint}{tail}", status)
    if status == 422:
        return UploadError(f"cannot {what} at {url}: 422, the request was malformed{tail}", status)
    return UploadError(f"cannot {what} at {url}: HTTP {status}{tail}", status, status >= 500)


def _detail(payload: bytes) -> str:
    try:
        answer = json.loads(payload)
    except ValueError:
        return payload.decode("utf-8", "replace").strip()[:200]
    if isinstance(answer, dict):
        for key in ("description", "detail", "message"):
            if answer.get(key):
                return str(answer[key])[:200]
    return str(answer)[:200]


# -- the record in the run folder ---------------------------------------------------------------


def _read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    uploads = record.get("uploads") if isinstance(record, dict) else None
    return uploads if isinstance(uploads, dict) else {}


def _write_record(path: Path, base: str, entry: dict[str, Any]) -> None:
    uploads = _read_record(path)
    previous = uploads.get(base)
    if entry.get("status") == "failed" and previous and previous.get("status") == "uploaded":
        entry = {**previous, "last_failure": {"time": entry["time"], "error": entry["error"]}}
    uploads[base] = entry
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps({"uploads": uploads}, indent=2) + "\n", "utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning("provtel: cannot record the upload in %s: %s", path, exc)


def _sibling_records(root: Path, own: Path) -> Iterator[Path]:
    try:
        folders = list(root.iterdir())
    except OSError:
        return
    for folder in folders:
        if folder != own and (folder / RECORD).is_file():
            yield folder / RECORD


# -- documents ----------------------------------------------------------------------------------


def _parse(data: bytes, path: Path) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise UploadError(f"{path} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise UploadError(f"{path} is not a PROV-JSON document")
    return document


def _models(document: dict[str, Any]) -> dict[str, str]:
    """Checkpoint entity id -> its digest."""
    out: dict[str, str] = {}
    entities = document.get("entity")
    for eid, record in entities.items() if isinstance(entities, dict) else ():
        if isinstance(record, dict) and isinstance(record.get(_DIGEST_KEY), str):
            out[eid] = record[_DIGEST_KEY]
    return out


def _relation_targets(document: dict[str, Any], kind: str) -> set[str]:
    table = document.get(kind)
    return {
        r["prov:entity"]
        for r in (table.values() if isinstance(table, dict) else ())
        if isinstance(r, dict) and isinstance(r.get("prov:entity"), str)
    }


def _used_digests(document: dict[str, Any]) -> set[str]:
    models = _models(document)
    return {models[e] for e in _relation_targets(document, "used") if e in models}


def _generated_digests(document: dict[str, Any]) -> set[str]:
    models = _models(document)
    return {models[e] for e in _relation_targets(document, "wasGeneratedBy") if e in models}


# -- small helpers ------------------------------------------------------------------------------


def _base_url(url: str) -> str:
    """The store's base URL: no trailing slash, no credentials, no query."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UploadError(f"not an http(s) URL: {_shown(url)}")
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _shown(url: str) -> str:
    """A URL safe to print: no userinfo, no query string."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# -- the `provtel upload` command ---------------------------------------------------------------


def add_upload_parser(sub: Any) -> None:
    """Register ``provtel upload`` (called by :mod:`provtel.exporter.cli`)."""
    p = sub.add_parser(
        "upload",
        help="upload run documents to a yProvStore",
        description="Upload the prov.json of each RUN folder to the yProvStore at --to: log in "
        "(or use a token), POST /documents, print the PID and storage URL. Credentials come "
        "from the options or OTEL_PYTHON_PROVTEL_UPLOAD_{TOKEN,EMAIL,PASSWORD}; the result is "
        "recorded in RUN/upload.json.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (or prov.json files)")
    p.add_argument(
        "--to",
        metavar="URL",
        default=os.environ.get(OTEL_PYTHON_PROVTEL_UPLOAD_URL),
        help="base URL of the yProvStore (default: OTEL_PYTHON_PROVTEL_UPLOAD_URL)",
    )
    p.add_argument("--token", help="bearer token (default: OTEL_PYTHON_PROVTEL_UPLOAD_TOKEN)")
    p.add_argument("--email", help="account to log in with (default: ..._UPLOAD_EMAIL)")
    p.add_argument(
        "--parent",
        metavar="PID",
        help="parent_document_pid (default: ..._UPLOAD_PARENT_PID, else found from lineage)",
    )
    p.add_argument("--force", action="store_true", help="upload again an unchanged document")
    p.add_argument("--attempts", type=int, default=DEFAULT_ATTEMPTS, help="tries per request (4)")
    p.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per request (30)"
    )
    p.set_defaults(func=_cmd_upload)


def _cmd_upload(args: Any) -> int:
    if not args.to:
        print(
            "provtel upload: give --to URL (or set OTEL_PYTHON_PROVTEL_UPLOAD_URL)", file=sys.stderr
        )
        return 2
    env = Credentials.from_env()
    credentials = Credentials(
        token=args.token or env.token,
        email=args.email or env.email,
        password=env.password,
    )
    if not credentials.token and credentials.email and not credentials.password:
        import getpass

        if sys.stdin.isatty():
            credentials = Credentials(
                email=credentials.email,
                password=getpass.getpass(f"password for {credentials.email}: "),
            )
    parent = args.parent or os.environ.get(OTEL_PYTHON_PROVTEL_UPLOAD_PARENT_PID) or None
    status = 0
    for run in args.runs:
        try:
            result = upload_run(
                run,
                args.to,
                credentials,
                parent,
                force=args.force,
                attempts=args.attempts,
                timeout=args.timeout,
            )
        except FileNotFoundError as exc:
            print(f"provtel upload: {exc}", file=sys.stderr)
            status = 2
            continue
        except UploadError as exc:
            print(f"provtel upload: {run}: {exc}", file=sys.stderr)
            print(
                f"  the run is kept; rerun `provtel upload {run} --to {_shown(args.to)}`",
                file=sys.stderr,
            )
            status = max(status, 1)
            continue
        what = "already uploaded" if result.skipped else "uploaded"
        parent_note = (
            f" (parent {result.parent_document_pid})" if result.parent_document_pid else ""
        )
        print(f"{run}: {what}: PID {result.pid}{parent_note}")
        if result.storage_url:
            print(f"  storage URL: {result.storage_url}")
    return status
