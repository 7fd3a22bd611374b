"""A stand-in for yProvStore on loopback: its login and document-create routes, as the service
behaves (HPCI-Lab/yProvStore ``routers/authentication/_login.py``, ``routers/documents/_create.py``,
``application/exceptions/handler.py``).

- ``POST /login`` ``{"email", "password"}`` -> ``{"access_token", "token_type": "bearer"}``;
  422 for a password under 8 characters (its pydantic model), 404 for an unknown email, 401 for a
  wrong password. Errors are ``{"description": ...}`` as the service's handler writes them.
- ``POST /documents[?parent_document_pid=PID]``: bearer token required (403 ``{"detail": "Not
  authenticated"}`` without one, as FastAPI's ``HTTPBearer``; 401 for an unknown token); exactly
  one of a multipart ``document_file`` (``application/json`` or ``text/plain``, else 400) or a
  JSON ``document_data``; 404 for an unknown parent; answers ``{pid, version, storage_url,
  owner_email, parent_document_pid}``.
- A stored document is parsed the way the service's graph endpoints do, with ``prov`` 2.0.0
  (``ProvDocument.deserialize(content=...)``, then ``unified().flattened()``), in a subprocess
  (prov 2 cannot be imported beside prov 3): :attr:`StoredDocument.parsed` is the outcome.
- :meth:`FakeYProvStore.fail_next` makes the next requests answer an error (e.g. 503), and
  :meth:`FakeYProvStore.delay_next` answers one late, to test retries.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

PROV2 = Path(sys.prefix) / "prov2"

_PARSE = """
import json, sys
import prov, prov.model
assert prov.__version__ == "2.0.0", prov.__version__
doc = prov.model.ProvDocument.deserialize(content=sys.stdin.buffer.read())
records = doc.unified().flattened().get_records()
print(json.dumps({"records": len(records),
                  "elements": sum(1 for r in records if r.is_element()),
                  "relations": sum(1 for r in records if r.is_relation())}))
"""


def parse_with_prov2(data: bytes) -> dict[str, Any]:
    """Parse a document as yProvStore's graph endpoints do, with prov 2.0.0."""
    env = {**os.environ, "PYTHONPATH": str(PROV2)}
    result = subprocess.run(
        [sys.executable, "-c", _PARSE], input=data, env=env, capture_output=True, timeout=120
    )
    if result.returncode != 0:
        return {"error": result.stderr.decode(errors="replace").strip().splitlines()[-1:]}
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


@dataclass
class StoredDocument:
    """One document the store accepted."""

    pid: str
    data: bytes
    content_type: str
    owner_email: str
    parent_document_pid: str | None
    _parsed: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def parsed(self) -> dict[str, Any]:
        """The document as the service's graph endpoints read it (prov 2.0.0), parsed on
        first use (the service, too, stores first and parses when a graph is asked for)."""
        if self._parsed is None:
            self._parsed = parse_with_prov2(self.data)
        return self._parsed


@dataclass
class Request:
    """One request the store received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FakeYProvStore:
    """A yProvStore on 127.0.0.1 (a context manager); ``url`` is its base URL."""

    def __init__(self, users: dict[str, str] | None = None, port: int = 0) -> None:
        self.users = dict(users or {"alice@example.org": "correct horse"})
        self.tokens: dict[str, str] = {}  # token -> email
        self.documents: dict[str, StoredDocument] = {}
        self.requests: list[Request] = []
        self._failures: list[tuple[int, str, dict[str, str]]] = []
        self._delays: list[float] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeYProvStore:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def token_for(self, email_address: str) -> str:
        """A valid token, as if the user had logged in."""
        token = uuid.uuid4().hex
        self.tokens[token] = email_address
        return token

    def fail_next(
        self,
        count: int,
        status: int = 503,
        description: str = "Service unavailable.",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``count`` requests with ``status``."""
        with self._lock:
            self._failures.extend([(status, description, headers or {})] * count)

    def delay_next(self, seconds: float) -> None:
        """Answer the next request only after ``seconds`` (it is then handled normally)."""
        with self._lock:
            self._delays.append(seconds)

    def posts(self, path: str) -> list[Request]:
        """The POST requests received on ``path`` (query excluded)."""
        return [r for r in self.requests if r.method == "POST" and urlsplit(r.path).path == path]

    # -- routes ---------------------------------------------------------------------------------

    def _login(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            data = json.loads(body)
            address, password = data["email"], data["password"]
        except (ValueError, KeyError, TypeError):
            return 422, {"description": "validation error", "details": []}
        if len(password) < 8:
            return 422, {"description": "password: at least 8 characters", "details": []}
        if address not in self.users:
            return 404, {"description": f"No user registered with email {address}."}
        if self.users[address] != password:
            return 401, {"description": "Invalid credentials."}
        return 200, {"access_token": self.token_for(address), "token_type": "bearer"}

    def _create(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        auth = headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            return 403, {"detail": "Not authenticated"}
        owner = self.tokens.get(auth[7:].strip())
        if owner is None:
            return 401, {"description": "Invalid or expired token."}
        query = parse_qs(urlsplit(path).query)
        parent = (query.get("parent_document_pid") or [None])[0]
        content_type = headers.get("content-type", "")
        file_part: tuple[bytes, str] | None = None
        if content_type == "application/json":
            try:
                data = json.loads(body)["document_data"]
            except (ValueError, KeyError, TypeError) as exc:
                return 400, {"description": f"Invalid JSON data provided: {exc}"}
            stored, part_type = bytes(str(data), "utf-8"), "application/json"
        elif content_type.startswith("multipart/form-data"):
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
            )
            for part in message.iter_parts():
                if part.get_param("name", header="content-disposition") == "document_file":
                    payload = part.get_payload(decode=True)
                    file_part = (
                        payload if isinstance(payload, bytes) else b"",
                        part.get_content_type(),
                    )
            if file_part is None:
                return 400, {
                    "description": "At least one of 'document_data' in request body or "
                    "'document_file' as uploaded file must be provided."
                }
            stored, part_type = file_part
            if part_type not in ("application/json", "text/plain"):
                return 400, {
                    "description": f"Failed to read document file: Unsupported file type: "
                    f"{part_type}. Only JSON or plain text files are allowed."
                }
        else:
            return 400, {"description": "Unsupported request body."}
        if parent is not None and parent not in self.documents:
            return 404, {"description": f"Document with PID {parent} not found."}
        pid = f"21.T11148/{uuid.uuid4().hex[:20]}"
        self.documents[pid] = StoredDocument(pid, stored, part_type, owner, parent)
        return 200, {
            "pid": pid,
            "version": 1,
            "storage_url": f"{self.url}/documents/{pid}/download",
            "owner_email": owner,
            "parent_document_pid": parent,
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        store = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with store._lock:
                    store.requests.append(Request("POST", self.path, headers, body))
                    failure = store._failures.pop(0) if store._failures else None
                    delay = store._delays.pop(0) if store._delays else 0.0
                time.sleep(delay)
                extra: dict[str, str] = {}
                if failure is not None:
                    status, answer, extra = failure[0], {"description": failure[1]}, failure[2]
                elif urlsplit(self.path).path == "/login":
                    status, answer = store._login(body)
                elif urlsplit(self.path).path == "/documents":
                    with store._lock:
                        status, answer = store._create(self.path, headers, body)
                else:
                    status, answer = 404, {"detail": "Not Found"}
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for key, value in extra.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

        return Handler
