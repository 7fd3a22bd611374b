"""Distributed RPC training (pytorch/examples distributed/rpc/rnn in miniature): two spawned
processes over loopback; ``dist_autograd.backward`` and ``DistributedOptimizer.step`` are the
backward and optimizer steps, so the trainer leaves a document with every step's loss."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from provtel.exporter.prov.validate import assert_valid
from tests.integration.test_torch_scripts import SCRIPTS, Run
from tests.support import clean_env, run_documents, run_instrumented

pytestmark = pytest.mark.slow


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def test_rpc_training_leaves_a_document_with_its_steps(tmp_path: Path) -> None:
    output = tmp_path / "prov"
    env = clean_env(
        RESULT=str(tmp_path / "result.json"), OTEL_PYTHON_PROVTEL_OUTPUT_DIR=str(output)
    )
    process = run_instrumented(SCRIPTS / "rpc_rnn.py", _free_port(), cwd=tmp_path, env=env)
    assert process.returncode == 0, process.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    (document,) = run_documents(output)  # the trainer's; the parameter server only serves
    run = Run(tmp_path, process, result, document, assert_valid(document))
    assert run.values("loss") == result["losses"]  # 12 distributed steps, each loss
    assert all(v > 0 for v in run.values("backward"))
    assert all(v > 0 for v in run.values("optimizer"))
    assert run.contexts("Epoch") == ["training"]
