"""A real Prometheus scrapes ``provtel serve`` and answers PromQL about an instrumented run."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from provtel.exporter.receiver import ReceiverServer
from tests.receiver.helpers import free_port, wait_for
from tests.support import clean_env, run_instrumented

pytestmark = pytest.mark.slow

PROMETHEUS = shutil.which("prometheus")

SCRIPT = """
from opentelemetry import metrics, trace

meter = metrics.get_meter("user.train")
steps = meter.create_counter("ml.steps", unit="{step}")
loss = meter.create_gauge("ml.loss", unit="1")
tracer = trace.get_tracer("user.train")
with tracer.start_as_current_span("train", attributes={"ml.activity": "run"}):
    for step in range(6):
        steps.add(1, {"ml.context": "training"})
        loss.set(1.0 / (step + 1), {"ml.context": "training"})
"""


def query(port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            answer = json.loads(resp.read())
    except OSError:
        return []  # not up yet
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


@pytest.mark.skipif(
    PROMETHEUS is None,
    reason="the prometheus binary is not installed (Debian package: apt-get install prometheus)",
)
def test_prometheus_scrapes_training_and_process_metrics(
    serve: Callable[..., ReceiverServer], tmp_path: Path, write_script: Any
) -> None:
    server = serve()
    script = write_script("scraped_run.py", SCRIPT)
    result = run_instrumented(
        script,
        cwd=tmp_path,
        env=clean_env(
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_METRICS_EXPORTER="otlp",
            OTEL_LOGS_EXPORTER="none",
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{server.http_port}",
        ),
    )
    assert result.returncode == 0, result.stderr

    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: provtel\n"
        "    honor_labels: true\n"  # keep job/instance of the training process
        f"    static_configs:\n      - targets: ['127.0.0.1:{server.http_port}']\n"
    )
    assert PROMETHEUS is not None
    prometheus = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        steps = wait_for(
            lambda: query(port, 'ml_steps_total{job="scraped_run", ml_context="training"}'),
            what="ml_steps_total in Prometheus",
        )
        assert [float(s["value"][1]) for s in steps] == [6.0]
        memory = wait_for(
            lambda: query(port, 'process_memory_usage_bytes{job="scraped_run"}'),
            what="process_memory_usage_bytes in Prometheus",
        )
        assert float(memory[0]["value"][1]) > 1e6  # a Python process' RSS
        (loss,) = query(port, 'ml_loss_ratio{job="scraped_run"}')
        assert float(loss["value"][1]) == pytest.approx(1 / 6)
        (info,) = query(port, 'target_info{job="scraped_run"}')
        assert info["metric"]["process_owner"]
    finally:
        prometheus.terminate()
        _, err = prometheus.communicate(timeout=30)
    assert prometheus.returncode == 0, err
