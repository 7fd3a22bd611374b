"""collector-config/: every pipeline, port and dashboard query checked without Docker.

No Collector binary or Docker engine is needed: the files are parsed and their structure, the
ports that connect them, and the metric names the dashboard queries are checked.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import pytest

from provtel.exporter.receiver.cli import add_serve_parser
from provtel.exporter.receiver.prometheus import instrument_metric_name, metric_name
from provtel.semconv import METRICS

yaml = pytest.importorskip("yaml", reason="PyYAML is a dev dependency (pip install -e '.[dev]')")

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "collector-config"
COLLECTORS = ["agent.yaml", "gateway.yaml"]
#: Component types of otelcol-contrib that the configs may use.
KNOWN = {
    "receivers": {"otlp", "prometheus", "hostmetrics"},
    "processors": {"batch", "memory_limiter", "resourcedetection", "resource", "attributes"},
    "exporters": {"otlp", "otlphttp", "prometheus", "file", "debug"},
}
_ENV = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load(name: str) -> Any:
    return yaml.safe_load((CONFIG / name).read_text(encoding="utf-8"))


def resolve(value: str) -> str:
    """``${env:NAME:-default}`` -> its default, as the Collector does with NAME unset."""
    return _ENV.sub(lambda m: m.group(2) or "", value)


def host_port(endpoint: str) -> tuple[str, int]:
    endpoint = resolve(endpoint).split("://")[-1].rstrip("/")
    host, _, port = endpoint.rpartition(":")
    return host, int(port)


def compose_services() -> dict[str, Any]:
    return dict(load("docker-compose.yaml")["services"])


def serve_args(command: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_parser(parser.add_subparsers())
    return parser.parse_args(command)


@pytest.mark.parametrize("name", COLLECTORS)
def test_every_pipeline_names_defined_components_and_all_are_used(name: str) -> None:
    config = load(name)
    used: dict[str, set[str]] = {section: set() for section in KNOWN}
    pipelines = config["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics"}
    for pipeline in pipelines.values():
        assert set(pipeline) == {"receivers", "processors", "exporters"}
        for section in KNOWN:
            for component in pipeline[section]:
                assert component in config[section], f"{name}: {component} is not defined"
                used[section].add(component)
        # The Collector's advice: limit memory first, batch last.
        assert pipeline["processors"][0] == "memory_limiter"
        assert pipeline["processors"][-1] == "batch"
    for section, known in KNOWN.items():
        assert set(config[section]) == used[section], f"{name}: unused {section}"
        for component in config[section]:
            assert component.split("/")[0] in known, f"{name}: unknown {component}"


def test_agent_detects_resources_batches_and_forwards_over_otlp() -> None:
    agent = load("agent.yaml")
    for pipeline in agent["service"]["pipelines"].values():
        assert pipeline["receivers"] == ["otlp"]
        assert "resourcedetection" in pipeline["processors"]
        assert [e.split("/")[0] for e in pipeline["exporters"]] == ["otlp"]


def test_gateway_feeds_jaeger_prometheus_and_provtel() -> None:
    gateway = load("gateway.yaml")
    exporters = gateway["exporters"]
    by_host = {
        host_port(c["endpoint"])[0]: name
        for name, c in exporters.items()
        if name.startswith("otlp")
    }
    traces = gateway["service"]["pipelines"]["traces"]["exporters"]
    metrics = gateway["service"]["pipelines"]["metrics"]["exporters"]
    assert by_host["jaeger"] in traces and by_host["provtel"] in traces
    assert "prometheus" in metrics and by_host["provtel"] in metrics
    assert by_host["jaeger"] not in metrics  # Jaeger takes traces only
    # provtel must not drop what it could not take at once: retry without a time limit.
    retry = exporters[by_host["provtel"]]["retry_on_failure"]
    assert retry["enabled"] and retry["max_elapsed_time"] == 0


def test_ports_agree_across_files() -> None:
    services = compose_services()
    agent, gateway = load("agent.yaml"), load("gateway.yaml")
    prometheus = load("prometheus.yml")
    datasources = load("grafana/provisioning/datasources/datasources.yaml")["datasources"]

    def exposed(service: str) -> set[int]:
        spec = services[service]
        ports = {int(p) for p in spec.get("expose", [])}
        ports |= {int(str(p).split(":")[-1]) for p in spec.get("ports", [])}
        return ports

    # training processes -> agent: the published ports are the agent's OTLP receiver ports.
    agent_otlp = agent["receivers"]["otlp"]["protocols"]
    published = {int(str(p).split(":")[0]) for p in services["agent"]["ports"]}
    assert {host_port(agent_otlp[p]["endpoint"])[1] for p in ("grpc", "http")} <= published
    # agent -> gateway (the default, and what compose sets).
    for endpoint in (
        agent["exporters"]["otlp"]["endpoint"],
        services["agent"]["environment"]["GATEWAY_ENDPOINT"],
    ):
        host, port = host_port(endpoint)
        assert host == "gateway"
        assert port == host_port(gateway["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"])[1]
        assert port in exposed("gateway")
    # gateway -> Jaeger and provtel serve.
    for name, config in gateway["exporters"].items():
        if not name.startswith("otlp"):
            continue
        host, port = host_port(config["endpoint"])
        assert host in services, f"{name} points at {host}, which compose does not run"
        assert port in exposed(host)
        if host == "provtel":
            args = serve_args(services["provtel"]["command"])
            assert args.grpc_port == port and args.host == "0.0.0.0"
            assert config["tls"]["insecure"] and args.tls_cert is None
    # Prometheus -> the gateway's Prometheus exporter.
    (scrape,) = prometheus["scrape_configs"]
    assert scrape["honor_labels"] is True
    (target,) = scrape["static_configs"][0]["targets"]
    host, port = host_port(target)
    assert (host, port) == ("gateway", host_port(gateway["exporters"]["prometheus"]["endpoint"])[1])
    assert port in exposed("gateway")
    # Grafana -> Prometheus (9090) and Jaeger (query/UI 16686).
    urls = {d["type"]: host_port(d["url"]) for d in datasources}
    assert urls["prometheus"] == ("prometheus", 9090) and 9090 in exposed("prometheus")
    assert urls["jaeger"] == ("jaeger", 16686) and 16686 in exposed("jaeger")
    # No two services publish the same host port.
    host_ports = [int(str(p).split(":")[0]) for s in services.values() for p in s.get("ports", [])]
    assert len(host_ports) == len(set(host_ports))


def test_compose_mounts_and_builds_files_that_exist() -> None:
    for name, service in compose_services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (CONFIG / source).exists(), f"{name} mounts missing {source}"
        build = service.get("build")
        if build:
            context = (CONFIG / build["context"]).resolve()
            dockerfile = context / build["dockerfile"]
            assert dockerfile.is_file()
            for line in dockerfile.read_text().splitlines():
                if line.startswith("COPY "):
                    assert (context / line.split()[1]).exists(), line
    dashboards = load("grafana/provisioning/dashboards/dashboards.yaml")["providers"]
    grafana_mounts = dict(v.split(":")[:2] for v in compose_services()["grafana"]["volumes"])
    for provider in dashboards:
        inside = provider["options"]["path"]
        (local,) = [k for k, v in grafana_mounts.items() if v == inside]
        assert list((CONFIG / local).glob("*.json")), "no dashboard to provision"


# -- the dashboard ------------------------------------------------------------------------------


def emitted_prometheus_names() -> set[str]:
    """What Prometheus holds for provtel's metrics (semconv), plus the Collector's target_info."""
    names = {"target_info"}
    for m in METRICS.values():
        name = instrument_metric_name(m.name, m.unit, m.type)
        if m.type == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return names


def dashboard_queries() -> list[str]:
    dashboard = json.loads((CONFIG / "grafana/dashboards/provtel-training.json").read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            source = target.get("datasource") or panel.get("datasource") or {}
            if source.get("type") == "prometheus":
                queries.append(target["expr"])
    for variable in dashboard["templating"]["list"]:
        query = variable["query"]
        queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


def test_dashboard_queries_only_metrics_provtel_emits() -> None:
    emitted = emitted_prometheus_names()
    selector = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{")
    used: set[str] = set()
    for query in dashboard_queries():
        names = set(selector.findall(query))
        names |= set(re.findall(r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)", query))
        assert names, f"no metric selector in {query!r}"
        assert names <= emitted, f"{query!r} queries {names - emitted}, which provtel never emits"
        used |= names
    # The four views the dashboard is for.
    for needed in (
        "ml_steps_total",  # training progress
        "ml_step_duration_seconds_bucket",  # step time
        "hw_gpu_utilization_ratio",
        "hw_power_watts",
        "hw_energy_joules_total",  # GPU utilisation, power, energy
        "ml_carbon_emissions_total",  # carbon
    ):
        assert needed in used, needed


@pytest.mark.parametrize(
    ("name", "unit", "kind", "monotonic", "expected"),
    [
        # Examples of the OTel Prometheus compatibility spec and prometheus/otlptranslator.
        ("system.filesystem.usage", "By", "gauge", False, "system_filesystem_usage_bytes"),
        ("system.network.dropped", "{packets}", "sum", True, "system_network_dropped_total"),
        ("system.memory.utilization", "1", "gauge", False, "system_memory_utilization_ratio"),
        ("http.server.duration", "s", "histogram", False, "http_server_duration_seconds"),
        ("requests.count", "1", "sum", True, "requests_count_total"),
        ("memory.usage", "By", "gauge", False, "memory_usage_bytes"),
        ("request.rate", "{request}/s", "gauge", False, "request_rate_per_second"),
        ("transfer.rate", "By/s", "gauge", False, "transfer_rate_bytes_per_second"),
        ("queue.size", "{item}", "sum", False, "queue_size"),
        ("elapsed.seconds", "s", "sum", True, "elapsed_seconds_total"),
    ],
)
def test_prometheus_names_follow_the_compatibility_spec(
    name: str, unit: str, kind: str, monotonic: bool, expected: str
) -> None:
    assert metric_name(name, unit, kind, monotonic) == expected
