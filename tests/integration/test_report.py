"""Reading a run as a person would: the end-of-run summary, `provtel report`, `provtel diff`.

Real training runs under ``opentelemetry-instrument`` (``scripts/report_bound.py``), each with a
chosen bottleneck: a dataset that sleeps in ``__getitem__``, a compute-heavy MLP, a large
checkpoint every three steps. The report, made from the documents alone, must name that
bottleneck, and its phases must add up to the wall time. Two runs that differ in one
hyperparameter, or in their data, must be told apart by ``provtel diff`` naming exactly that.
A two-rank job (launcher variables set by hand, as torchrun would) gives a per-rank report with
the slowest rank.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from provtel.exporter.prov.validate import assert_valid
from tests.integration.browser import open_page
from tests.support import INSTRUMENT, clean_env, provtel_cli, run_documents

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).parent / "scripts" / "report_bound.py"


@dataclass
class Run:
    """One finished instrumented run: its folder, its document, what the script measured."""

    folder: Path
    stderr: str
    measured: dict[str, Any]


#: name -> (script arguments, data folder, extra environment)
RUNS: dict[str, tuple[tuple[str, ...], str, dict[str, str]]] = {
    "input": (("--mode", "input"), "data_a", {}),
    "compute": (("--mode", "compute"), "data_a", {}),
    "checkpoint": (("--mode", "checkpoint"), "data_a", {}),
    "wider": (("--mode", "input", "--hidden", "32"), "data_a", {}),
    "other_data": (("--mode", "input"), "data_b", {"OTEL_PYTHON_PROVTEL_SUMMARY": "false"}),
}


def _start(
    cwd: Path, args: tuple[str, ...], data: str, env: dict[str, str]
) -> subprocess.Popen[str]:
    cwd.mkdir(parents=True)
    # the runs share their data folders and their script, as runs on one machine do; the script
    # is a copy outside this repository, so commits made meanwhile do not change its "code"
    data_dir = cwd.parent / data
    script = cwd.parent / SCRIPT.name
    if not script.exists():
        script.write_bytes(SCRIPT.read_bytes())
    return subprocess.Popen(
        [str(INSTRUMENT), sys.executable, str(script), *args, "--data", str(data_dir)],
        cwd=cwd,
        env=clean_env(OMP_NUM_THREADS="1", RESULT=str(cwd / "result.json"), **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """All the runs of this module, three at a time (each takes a few seconds)."""
    root = tmp_path_factory.mktemp("report")
    out: dict[str, Run] = {}
    names = list(RUNS)
    for i in range(0, len(names), 3):
        procs = {n: _start(root / n, *RUNS[n]) for n in names[i : i + 3]}
        for name, proc in procs.items():
            _, stderr = proc.communicate(timeout=240)
            assert proc.returncode == 0, stderr[-3000:]
            (document,) = run_documents(root / name / "prov")
            assert_valid(document)
            measured = json.loads((root / name / "result.json").read_text())
            out[name] = Run(document.parent, stderr, measured)
    return out


@cache  # the runs do not change: several tests read the report of one (each call is a process)
def report_json(target: Path) -> dict[str, Any]:
    result = provtel_cli("report", target, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize(
    ("name", "verdict", "phase"),
    [
        ("input", "input-bound", "data_wait"),
        ("compute", "compute-bound", "backward"),
        ("checkpoint", "checkpoint-bound", "checkpoint"),
    ],
)
def test_the_report_names_the_bottleneck(
    runs: dict[str, Run], name: str, verdict: str, phase: str
) -> None:
    report = report_json(runs[name].folder)
    (rank,) = report["ranks"]
    assert rank["verdict"]["label"] == verdict
    assert rank["steps"] == runs[name].measured["steps"]
    # the numbers behind the verdict: the named phase dominates the training loop
    loop = {k: v for k, v in rank["phases_s"].items() if k != "other"}
    if name == "compute":
        compute = loop["forward_loss"] + loop["backward"] + loop["optimizer"]
        assert compute > 0.7 * sum(loop.values())
    else:
        assert loop[phase] > 0.7 * sum(loop.values())
    text = provtel_cli("report", runs[name].folder)
    assert text.returncode == 0, text.stderr
    assert f"verdict: {verdict}: data wait" in text.stdout


@pytest.mark.parametrize("name", ["input", "compute", "checkpoint"])
def test_phase_times_add_up_to_the_wall_time(runs: dict[str, Run], name: str) -> None:
    (rank,) = report_json(runs[name].folder)["ranks"]
    phases = rank["phases_s"]
    assert set(phases) == {
        "data_wait",
        "forward_loss",
        "backward",
        "optimizer",
        "checkpoint",
        "evaluation",
        "other",
    }
    assert all(v >= 0 for v in phases.values()), phases  # nothing counted twice
    assert sum(phases.values()) == pytest.approx(rank["wall_s"], rel=0.05)
    # the phases of the training loop lie inside the loop the script timed itself (the rest of
    # the loop is "other": prints, model.train()/eval(), creating the loaders' iterators)
    loop = sum(v for k, v in phases.items() if k != "other")
    assert 0.6 * runs[name].measured["loop_s"] < loop < 1.05 * runs[name].measured["loop_s"]


def test_the_end_of_run_summary_is_printed_on_stderr(runs: dict[str, Run]) -> None:
    stderr = runs["input"].stderr
    assert f"provtel: {runs['input'].folder}" in stderr
    assert "verdict: input-bound" in stderr
    assert "24 training steps" in stderr
    assert "validation: loss " in stderr  # the evaluation result of the last pass
    assert "energy: unavailable: " in stderr  # no NVML, no RAPL here: said, never zero
    assert "carbon: unavailable: " in stderr
    assert "provtel:" not in runs["other_data"].stderr  # OTEL_PYTHON_PROVTEL_SUMMARY=false


def test_the_text_report_shows_what_the_run_did(runs: dict[str, Run]) -> None:
    result = provtel_cli("report", runs["checkpoint"].folder)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for expected in (
        "checkpointing",
        "forward+loss",
        "throughput:",
        "training loss: first",
        "validation  epoch 0",
        "hidden",  # a hyperparameter
        "dataset data_a",  # lineage: the dataset, named after its root folder
        "checkpoint ckpt_1.pt",
        "sha256:",
        "carbon: unavailable",
    ):
        assert expected in text, expected
    report = report_json(runs["checkpoint"].folder)
    assert len(report["lineage"]["checkpoints"]) == 8  # every third of 24 steps
    # progress bars on stderr when asked (by default only on a terminal); stdout unchanged
    shown = provtel_cli("report", runs["checkpoint"].folder, "--progress")
    assert "provtel: step series" in shown.stderr and shown.stdout == text
    evaluations = report["ranks"][0]["evaluations"]
    assert [e["context"] for e in evaluations] == ["validation", "validation"]
    assert all(isinstance(e["results"]["loss"], float) for e in evaluations)


def test_diff_of_one_hyperparameter_names_exactly_that_one(runs: dict[str, Run]) -> None:
    result = provtel_cli("diff", runs["input"].folder, runs["wider"].folder, "--json")
    assert result.returncode == 0, result.stderr
    d = json.loads(result.stdout)
    assert [(c["name"], c["a"], c["b"]) for c in d["hyperparameters"]] == [("hidden", 16, 32)]
    assert d["data"] == [] and d["code"] == [] and d["packages"] == []
    outcome = {o["name"]: o for o in d["outcomes"]}
    loss = outcome["final training loss"]
    assert loss["change"] == pytest.approx(loss["b"] - loss["a"]) and loss["change"] != 0
    assert (
        "same code, same data, hyperparameter hidden differs → final training loss differs by"
        in (d["headline"])
    )
    text = provtel_cli("diff", runs["input"].folder, runs["wider"].folder).stdout
    assert "  hidden: 16 → 32" in text


def test_diff_of_other_data_names_the_dataset(runs: dict[str, Run]) -> None:
    result = provtel_cli("diff", runs["input"].folder, runs["other_data"].folder, "--json")
    assert result.returncode == 0, result.stderr
    d = json.loads(result.stdout)
    (training,) = [c for c in d["data"] if c["context"] == "training"]
    assert (training["a"], training["b"]) == (["data_a"], ["data_b"])
    assert "name" in training["fields"] and "path" in training["fields"]
    assert "training dataset data_a → data_b" in d["headline"]
    text = provtel_cli("diff", runs["input"].folder, runs["other_data"].folder).stdout
    assert "training dataset data_a → data_b" in text


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A two-rank job as torchrun starts it (its variables set by hand); rank 1 reads its
    data twice as slowly."""
    root = tmp_path_factory.mktemp("job")
    procs = []
    for rank, delay in ((0, "0.002"), (1, "0.004")):
        env = {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "GROUP_RANK": "0",
            "TORCHELASTIC_RUN_ID": "report-job",
        }
        procs.append(
            subprocess.Popen(
                [str(INSTRUMENT), sys.executable, str(SCRIPT), "--mode", "input", "--delay", delay],
                cwd=root,
                env=clean_env(OMP_NUM_THREADS="1", **env),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    stderrs = []
    for proc in procs:
        _, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 0, stderr[-3000:]
        stderrs.append(stderr)
    (job_dir,) = (root / "prov").iterdir()
    assert_valid(job_dir / "prov.json")
    # the rank that merged the job printed the job's summary, the other one nothing
    assert sum(f"provtel: {job_dir}" in s for s in stderrs) == 1
    yield job_dir


def test_a_job_is_reported_per_rank_with_the_slowest(job: Path) -> None:
    report = report_json(job)
    assert [r["rank"] for r in report["ranks"]] == [0, 1]
    assert report["job"]["world_size"] == 2
    assert report["job"]["slowest_rank"] == 1
    busy = report["job"]["busy_s"]
    assert report["job"]["spread_s"] == pytest.approx(busy["1"] - busy["0"])
    for r in report["ranks"]:
        assert r["verdict"]["label"] == "input-bound"
        assert sum(r["phases_s"].values()) == pytest.approx(r["wall_s"], rel=0.05)
    text = provtel_cli("report", job).stdout
    assert "rank 1: busy" in text and "← slowest" in text


def test_the_html_report_renders_offline_in_chromium(runs: dict[str, Run], tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    result = provtel_cli("report", runs["checkpoint"].folder, "--html", html)
    assert result.returncode == 0, result.stderr
    text = html.read_text(encoding="utf-8")
    assert "<script" not in text
    # nothing to fetch: no link, source, CSS url() or import names a remote resource
    assert re.findall(r"(?:href|src)=\"(?!#|data:)[^\"]*\"|url\((?!#)|@import", text) == []
    page = open_page(
        html.as_uri(),
        tmp_path / "profile",
        evaluate={
            "charts": "document.querySelectorAll('figure svg').length",
            "captions": "[...document.querySelectorAll('figcaption')].map(f => f.textContent)",
            "verdict": "document.querySelector('.verdict b').textContent",
            "lines": "document.querySelectorAll('figure svg path').length",
        },
    )
    assert page.errors == []
    assert page.requests == [html.as_uri()]  # the page itself and nothing else
    assert page.evaluated["verdict"] == "checkpoint-bound"
    assert page.evaluated["captions"][:2] == ["Where the time went", "Loss"]
    assert "Throughput" in page.evaluated["captions"]
    assert page.evaluated["charts"] >= 4 and page.evaluated["lines"] > 20
    assert page.screenshot.startswith(b"\x89PNG")
    (tmp_path / "report.png").write_bytes(page.screenshot)
    assert (tmp_path / "report.png").stat().st_size > 50_000  # charts, not a blank page


def test_export_and_graph(runs: dict[str, Run], tmp_path: Path) -> None:
    folder = runs["checkpoint"].folder
    ttl = tmp_path / "run.ttl"
    result = provtel_cli("export", folder, "--format", "turtle", "-o", ttl)
    assert result.returncode == 0, result.stderr
    import rdflib

    graph = rdflib.Graph().parse(ttl, format="turtle")
    prov = rdflib.Namespace("http://www.w3.org/ns/prov#")
    assert len(set(graph.subjects(rdflib.RDF.type, prov.Activity))) > 10
    for fmt, suffix in (("provn", ".provn"), ("xml", ".xml"), ("jsonld", ".jsonld")):
        result = provtel_cli("export", folder / "prov.json", "--format", fmt)
        assert result.returncode == 0, result.stderr
        assert (folder / f"prov{suffix}").stat().st_size > 1000
    svg = tmp_path / "run.svg"
    result = provtel_cli("graph", folder, "-o", svg)
    assert result.returncode == 0, result.stderr
    from xml.etree import ElementTree

    root = ElementTree.parse(svg).getroot()
    texts = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "checkpoint-bound" not in texts  # a graph, not the report
    assert any(t.startswith("run report_bound") for t in texts)
    assert any("step block" in t for t in texts)  # blocks collapsed into one node per pass
    assert sum("step block" in t for t in texts) == 4  # 2 epochs + 2 validation passes
    assert any(t.startswith("save ckpt_") for t in texts)
    assert any(t.startswith("dataset data_a") for t in texts)


def test_a_run_received_by_provtel_serve_is_reported(tmp_path: Path) -> None:
    """The same script exporting over OTLP to `provtel serve`: its folder reads the same way."""
    from tests.receiver.helpers import ServeProcess, documents, wait_for

    server = ServeProcess(tmp_path / "served", "--grace", "1")
    try:
        proc = subprocess.run(
            [
                str(INSTRUMENT),
                sys.executable,
                str(SCRIPT),
                "--mode",
                "checkpoint",
                "--data",
                str(tmp_path / "data_a"),
            ],
            cwd=tmp_path,
            env=clean_env(
                OMP_NUM_THREADS="1",
                OTEL_TRACES_EXPORTER="otlp",
                OTEL_METRICS_EXPORTER="otlp",
                OTEL_LOGS_EXPORTER="none",
                OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
                OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{server.grpc_port}",
            ),
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        (document,) = wait_for(lambda: documents(tmp_path / "served"), what="the document")
    finally:
        assert server.stop() == 0, server.log_text()
    assert not (tmp_path / "prov").exists()  # nothing written by the process itself
    assert_valid(document)
    (rank,) = report_json(document.parent)["ranks"]
    assert rank["verdict"]["label"] == "checkpoint-bound"
    assert rank["steps"] == 24 and rank["checkpoints"] == 8
    assert all(v >= 0 for v in rank["phases_s"].values())
    assert sum(rank["phases_s"].values()) == pytest.approx(rank["wall_s"], rel=0.05)
