"""`provtel upload` and the automatic upload, against a yProvStore stand-in on loopback.

The store (tests/yprovstore.py) behaves like yProvStore's routes and parses what it stores with
prov 2.0.0, as the service does; the documents come from real runs through the SDK and the PROV
exporter, validated with the project's pipeline.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from provtel.exporter.prov import ProvSpanExporter
from provtel.exporter.prov.validate import assert_valid
from provtel.exporter.upload import Credentials, UploadError, upload_run
from tests.support import clean_env, provtel_cli, run_documents
from tests.yprovstore import FakeYProvStore, parse_with_prov2

EMAIL, PASSWORD = "alice@example.org", "correct horse"


def _make_run(output: Path, name: str, checkpoint: tuple[str, str] | None = None) -> Path:
    """A run through the SDK and the PROV exporter; ``checkpoint`` = (operation, digest)."""
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    saved = os.environ.get("OTEL_PYTHON_PROVTEL_RUN_NAME")
    os.environ["OTEL_PYTHON_PROVTEL_RUN_NAME"] = name  # the run folder's name
    try:
        exporter = ProvSpanExporter(output_dir=output)
    finally:
        if saved is None:
            del os.environ["OTEL_PYTHON_PROVTEL_RUN_NAME"]
        else:
            os.environ["OTEL_PYTHON_PROVTEL_RUN_NAME"] = saved
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span(
        "run", attributes={"ml.activity": "run", "ml.hparam.lr": 0.1}
    ):
        if checkpoint:
            operation, digest = checkpoint
            with tracer.start_as_current_span(
                f"checkpoint {operation}",
                attributes={
                    "ml.activity": "checkpoint",
                    "ml.checkpoint.operation": operation,
                    "ml.checkpoint.digest": digest,
                    "file.path": f"/data/{name}.pt",
                    "file.size": 1234,
                },
            ):
                time.sleep(0.001)
    provider.shutdown()
    (document,) = [d for d in run_documents(output) if d.parent.name.startswith(name)]
    assert_valid(document)
    return document.parent


@pytest.fixture(scope="module")
def template_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_run(tmp_path_factory.mktemp("template"), "train")


@pytest.fixture
def run_dir(template_run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "prov" / template_run.name
    shutil.copytree(template_run, target)
    return target


@pytest.fixture
def store():
    with FakeYProvStore({EMAIL: PASSWORD}) as server:
        yield server


def _upload(*args: str | Path, password: str | None = PASSWORD) -> subprocess.CompletedProcess[str]:
    env = clean_env(**({"OTEL_PYTHON_PROVTEL_UPLOAD_PASSWORD": password} if password else {}))
    return subprocess.run(
        [sys.executable, "-m", "provtel.exporter.cli", "upload", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _record(run_dir: Path, url: str) -> dict:
    return json.loads((run_dir / "upload.json").read_text())["uploads"][url]


def test_upload_logs_in_and_stores_the_document_as_multipart_json(
    run_dir: Path, store: FakeYProvStore
) -> None:
    result = _upload(run_dir, "--to", store.url + "/", "--email", EMAIL)
    assert result.returncode == 0, result.stderr
    (stored,) = store.documents.values()
    assert f"PID {stored.pid}" in result.stdout
    assert f"storage URL: {store.url}/documents/{stored.pid}/download" in result.stdout
    # what the service keeps is the file, byte for byte, as application/json, and it parses
    assert stored.data == (run_dir / "prov.json").read_bytes()
    assert stored.content_type == "application/json"
    assert stored.owner_email == EMAIL
    assert stored.parent_document_pid is None
    assert "error" not in stored.parsed and stored.parsed["elements"] > 3, stored.parsed
    (login,) = store.posts("/login")
    assert json.loads(login.body) == {"email": EMAIL, "password": PASSWORD}
    (create,) = store.posts("/documents")
    assert create.headers["content-type"].startswith("multipart/form-data; boundary=")
    # recorded in the run folder, without any secret
    record = _record(run_dir, store.url)
    assert record["status"] == "uploaded" and record["pid"] == stored.pid
    assert record["storage_url"].endswith("/download")
    text = (run_dir / "upload.json").read_text()
    assert PASSWORD not in text and "access_token" not in text
    # rerun: nothing is sent twice; --force sends it again
    again = _upload(run_dir, "--to", store.url, "--email", EMAIL)
    assert again.returncode == 0 and "already uploaded" in again.stdout
    assert len(store.documents) == 1 and len(store.posts("/documents")) == 1
    forced = _upload(run_dir, "--to", store.url, "--email", EMAIL, "--force")
    assert forced.returncode == 0 and len(store.documents) == 2


def test_a_token_given_directly_skips_the_login(run_dir: Path, store: FakeYProvStore) -> None:
    token = store.token_for(EMAIL)
    result = _upload(run_dir, "--to", store.url, "--token", token, password=None)
    assert result.returncode == 0, result.stderr
    assert store.posts("/login") == []
    (create,) = store.posts("/documents")
    assert create.headers["authorization"] == f"Bearer {token}"


@pytest.mark.parametrize(
    ("args", "password", "expected"),
    [
        (("--email", EMAIL), "wrong password!", "401 Unauthorized, the credentials were refused"),
        (("--token", "not-a-token"), None, "401 Unauthorized, the token was refused"),
        (("--email", "bob@example.org"), PASSWORD, "404 Not Found, no user is registered"),
        ((), None, "no credentials: give a token"),
    ],
)
def test_refused_credentials_are_a_clear_error_and_nothing_is_stored(
    run_dir: Path,
    store: FakeYProvStore,
    args: tuple[str, ...],
    password: str | None,
    expected: str,
) -> None:
    result = _upload(run_dir, "--to", store.url, *args, password=password)
    assert result.returncode == 1
    assert expected in result.stderr, result.stderr
    assert "the run is kept; rerun `provtel upload" in result.stderr
    assert store.documents == {}
    assert _record(run_dir, store.url)["status"] == "failed"
    assert (run_dir / "prov.json").is_file()


def test_bad_request_and_forbidden_stop_at_once(run_dir: Path, store: FakeYProvStore) -> None:
    token = store.token_for(EMAIL)
    store.fail_next(1, 400, "Invalid document data provided as input.")
    result = _upload(run_dir, "--to", store.url, "--token", token, password=None)
    assert result.returncode == 1
    assert "400 Bad Request, the store refused it: Invalid document data" in result.stderr
    store.fail_next(1, 403, "Forbidden.")
    result = _upload(run_dir, "--to", store.url, "--token", token, password=None)
    assert "403 Forbidden" in result.stderr
    assert len(store.posts("/documents")) == 2  # no retries for 4xx
    assert store.documents == {}


def test_server_errors_are_retried_with_backoff(run_dir: Path, store: FakeYProvStore) -> None:
    store.fail_next(2, 503, "Service unavailable.", {"Retry-After": "0"})
    delays: list[float] = []
    result = upload_run(
        run_dir, store.url, Credentials(email=EMAIL, password=PASSWORD), sleep=delays.append
    )
    # the login got the two 503s (Retry-After: 0 honoured), then login and create succeeded
    assert delays == [0.0, 0.0]
    assert len(store.posts("/login")) == 3 and len(store.posts("/documents")) == 1
    assert result.pid in store.documents
    # without Retry-After: exponential backoff, then a clear error after the last attempt
    store.fail_next(4, 502, "Bad gateway")
    delays.clear()
    with pytest.raises(UploadError, match=r"HTTP 502.*gave up after 4 attempts"):
        upload_run(
            run_dir,
            store.url,
            Credentials(token=store.token_for(EMAIL)),
            force=True,
            backoff=0.5,
            sleep=delays.append,
        )
    assert delays == [0.5, 1.0, 2.0]
    record = _record(run_dir, store.url)
    # the earlier successful upload stays recorded beside the failure
    assert record["pid"] == result.pid and "gave up" in record["last_failure"]["error"]


def test_a_timeout_is_retried(run_dir: Path, store: FakeYProvStore) -> None:
    # the first create answers after the client's timeout: the client retries and succeeds.
    # (yProvStore has no idempotency key: the late first request is stored too.)
    store.delay_next(1.5)
    token = store.token_for(EMAIL)
    delays: list[float] = []
    result = upload_run(
        run_dir, store.url, Credentials(token=token), timeout=0.5, sleep=delays.append
    )
    assert delays == [1.0]
    assert len(store.posts("/documents")) == 2
    assert result.pid in store.documents
    assert _record(run_dir, store.url)["pid"] == result.pid


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_nothing_is_lost_when_the_store_is_down(run_dir: Path) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    before = (run_dir / "prov.json").read_bytes()
    result = _upload(run_dir, "--to", url, "--token", "t0k3n", "--attempts", "2", password=None)
    assert result.returncode == 1
    assert f"cannot store the document at {url}/documents" in result.stderr
    assert "gave up after 2 attempts" in result.stderr
    assert (run_dir / "prov.json").read_bytes() == before
    assert _record(run_dir, url)["status"] == "failed"
    # the store comes back: the same command succeeds
    with FakeYProvStore({EMAIL: PASSWORD}, port=port) as store:
        token = store.token_for(EMAIL)
        result = _upload(run_dir, "--to", url, "--token", token, password=None)
        assert result.returncode == 0, result.stderr
        (stored,) = store.documents.values()
        assert stored.data == before
    assert _record(run_dir, url)["pid"] == stored.pid


def test_parent_document_pid_explicit_unknown_and_from_lineage(
    tmp_path: Path, store: FakeYProvStore
) -> None:
    output = tmp_path / "prov"
    digest = "sha256:" + "ab" * 32
    pretrain = _make_run(output, "pretrain", ("save", digest))
    finetune = _make_run(output, "finetune", ("load", digest))
    unrelated = _make_run(output, "unrelated")
    token = store.token_for(EMAIL)
    first = _upload(pretrain, "--to", store.url, "--token", token, password=None)
    assert first.returncode == 0, first.stderr
    (parent_pid,) = store.documents
    assert _record(pretrain, store.url)["generated_checkpoints"] == [digest]
    # the fine-tuning run loaded pretrain's checkpoint: its parent is found from lineage
    second = _upload(finetune, "--to", store.url, "--token", token, password=None)
    assert second.returncode == 0, second.stderr
    assert f"(parent {parent_pid})" in second.stdout
    child = store.documents[_record(finetune, store.url)["pid"]]
    assert child.parent_document_pid == parent_pid
    (create,) = [r for r in store.posts("/documents") if "parent_document_pid" in r.path]
    assert create.path == f"/documents?parent_document_pid={parent_pid.replace('/', '%2F')}"
    # an unrelated run has no parent; an explicit one is sent; an unknown one is a clear error
    third = _upload(unrelated, "--to", store.url, "--token", token, password=None)
    assert store.documents[_record(unrelated, store.url)["pid"]].parent_document_pid is None
    assert third.returncode == 0
    explicit = _upload(
        unrelated,
        "--to",
        store.url,
        "--token",
        token,
        "--parent",
        parent_pid,
        "--force",
        password=None,
    )
    assert explicit.returncode == 0
    assert store.documents[_record(unrelated, store.url)["pid"]].parent_document_pid == parent_pid
    missing = _upload(
        unrelated,
        "--to",
        store.url,
        "--token",
        token,
        "--parent",
        "21.T11148/none",
        "--force",
        password=None,
    )
    assert missing.returncode == 1
    assert "404 Not Found, the parent document PID does not exist" in missing.stderr


_SCRIPT = textwrap.dedent(
    """
    import torch
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randn(32, 2)), batch_size=8)
    for x, y in loader:
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    """
)


def test_automatic_upload_at_the_end_of_an_instrumented_run(
    tmp_path: Path, store: FakeYProvStore
) -> None:
    script = tmp_path / "train.py"
    script.write_text(_SCRIPT)
    env = clean_env(
        OTEL_PYTHON_PROVTEL_OUTPUT_DIR=str(tmp_path / "prov"),
        OTEL_PYTHON_PROVTEL_UPLOAD_URL=store.url,
        OTEL_PYTHON_PROVTEL_UPLOAD_EMAIL=EMAIL,
        OTEL_PYTHON_PROVTEL_UPLOAD_PASSWORD=PASSWORD,
        OTEL_PYTHON_PROVTEL_HW_SAMPLE_INTERVAL="0",
    )
    from tests.support import run_instrumented

    result = run_instrumented(script, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    (document,) = run_documents(tmp_path / "prov")
    assert_valid(document, yprov=True)
    (stored,) = store.documents.values()
    assert stored.data == document.read_bytes()
    assert "error" not in stored.parsed
    assert f"PID {stored.pid}" in result.stderr
    assert _record(document.parent, store.url)["pid"] == stored.pid


def test_automatic_upload_with_the_store_down_keeps_the_run(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(_SCRIPT)
    url = f"http://127.0.0.1:{_free_port()}"
    env = clean_env(
        OTEL_PYTHON_PROVTEL_OUTPUT_DIR=str(tmp_path / "prov"),
        OTEL_PYTHON_PROVTEL_UPLOAD_URL=url,
        OTEL_PYTHON_PROVTEL_UPLOAD_TOKEN="t0k3n",
        OTEL_PYTHON_PROVTEL_UPLOAD_TIMEOUT="2",
        OTEL_PYTHON_PROVTEL_HW_SAMPLE_INTERVAL="0",
    )
    from tests.support import run_instrumented

    result = run_instrumented(script, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr  # the training is not disturbed
    (document,) = run_documents(tmp_path / "prov")
    assert_valid(document)
    assert f"upload of {document} to {url} failed" in result.stderr
    assert "t0k3n" not in result.stderr
    assert _record(document.parent, url)["status"] == "failed"


def test_the_fake_store_parses_like_the_service(run_dir: Path) -> None:
    # the stand-in itself: prov 2.0.0 accepts our document, and rejects a broken one
    assert parse_with_prov2((run_dir / "prov.json").read_bytes())["records"] > 3
    assert "error" in parse_with_prov2(b'{"entity": {"e1": 5}}')


def test_cli_needs_a_url(run_dir: Path) -> None:
    result = provtel_cli("upload", run_dir)
    assert result.returncode == 2 and "give --to URL" in result.stderr
