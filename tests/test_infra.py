"""The docker-compose stack parses and holds together (where docker is absent, a structural check),
and its monitoring (Prometheus, Grafana) points at what serving exports."""

import json
import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from serving.metrics import ServingMetrics
from serving.metrics import router as metrics_router

INFRA = Path(__file__).resolve().parents[1] / "infra"
SERVICES = {
    "secrets-check", "objectstore", "buckets", "postgres", "mlflow", "prefect", "prefect-worker", "prefect-alerts", "monitor-page",
    "label-studio", "serving", "prometheus", "grafana",
}
ONE_SHOT = {"secrets-check", "buckets", "prefect-alerts"}
SECRETS = {"S3_SECRET_KEY", "POSTGRES_PASSWORD", "LABEL_STUDIO_PASSWORD", "LABEL_STUDIO_TOKEN", "SERVING_TOKEN", "GRAFANA_ADMIN_PASSWORD"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


def test_every_service_is_there_pinned_and_health_checked(compose):
    services = compose["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        image = service.get("image", "")
        assert re.fullmatch(r"[\w./-]+:[\w.${}:-]+", image) and not image.endswith(":latest"), f"{name}: image {image!r} is not pinned"
        if name not in ONE_SHOT:
            test = service.get("healthcheck", {}).get("test")
            assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no health check"
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert rule["condition"] in ("service_healthy", "service_completed_successfully")
    assert set(compose["volumes"]) >= {"objectstore", "postgres", "label-studio", "prometheus", "grafana"}


def test_every_variable_the_stack_reads_is_in_the_example_env(compose):
    text = (INFRA / "docker-compose.yml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text))
    example = {line.split("=", 1)[0] for line in (INFRA / ".env.example").read_text().splitlines() if "=" in line and not line.startswith("#")}
    assert used <= example, f"missing from .env.example: {sorted(used - example)}"


def test_builds_and_mounts_point_at_files_that_exist(compose):
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = (INFRA / build["context"]).resolve()
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), f"{name}: no Dockerfile"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (INFRA / source).exists(), f"{name} mounts missing {source}"


def example_env() -> dict[str, str]:
    return dict(line.split("=", 1) for line in (INFRA / ".env.example").read_text().splitlines() if "=" in line and not line.startswith("#"))


def test_nothing_starts_before_the_secrets_check_succeeds(compose):
    """Every service waits for the one-shot ``secrets-check``, which runs infra/check-secrets.sh on every secret."""
    services = compose["services"]
    for name, service in services.items():
        if name != "secrets-check":
            assert service.get("depends_on", {}).get("secrets-check") == {"condition": "service_completed_successfully"}, name
    check = services["secrets-check"]
    script = check["entrypoint"][-1]
    assert check["entrypoint"][0] == "/bin/sh" and f"./check-secrets.sh:{script}:ro" in check["volumes"]
    assert (INFRA / "check-secrets.sh").is_file() and check["restart"] == "no"
    assert set(check["environment"]) == SECRETS
    assert all(re.fullmatch(rf"\$\{{{name}:\?[^}}]+\}}", value) for name, value in check["environment"].items())


def test_the_example_env_ships_no_usable_secret():
    """Compose's ``${VAR:?}`` refuses an empty value: the example's secrets are empty, so a copy used unchanged starts nothing."""
    example = example_env()
    assert {name for name in SECRETS if example[name]} == set()
    text = (INFRA / "docker-compose.yml").read_text()
    assert SECRETS <= set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))


def _compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0


# The part of the Compose specification this stack uses: key → allowed types.
SERVICE_KEYS = {
    "image": str, "build": dict, "command": (str, list), "entrypoint": (str, list), "environment": dict,
    "volumes": list, "ports": list, "healthcheck": dict, "depends_on": dict, "restart": str,
}
HEALTHCHECK_KEYS = {"test": list, "interval": str, "timeout": str, "retries": int, "start_period": str}


def test_compose_file_is_valid(compose, tmp_path):
    """``docker compose config`` where the plugin exists; otherwise a schema check of the keys this stack uses."""
    if _compose_available():
        def config(env_file: Path) -> subprocess.CompletedProcess:
            command = ["docker", "compose", "--env-file", str(env_file), "-f", str(INFRA / "docker-compose.yml"), "config", "-q"]
            return subprocess.run(command, capture_output=True, text=True, timeout=60)

        refused = config(INFRA / ".env.example")
        assert refused.returncode != 0 and "in infra/.env" in refused.stderr, "compose refuses the example's empty secrets"
        filled = tmp_path / ".env"
        values = example_env() | {name: secrets.token_hex(20) for name in SECRETS}
        filled.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        result = config(filled)
        assert result.returncode == 0, result.stderr
        return
    assert set(compose) <= {"name", "services", "volumes", "networks"} | {k for k in compose if k.startswith("x-")}
    for name, service in compose["services"].items():
        for key, value in service.items():
            assert key in SERVICE_KEYS, f"{name}: unknown key {key!r}"
            assert isinstance(value, SERVICE_KEYS[key]), f"{name}.{key} has the wrong type {type(value).__name__}"
        assert "image" in service or "build" in service, f"{name} has neither image nor build"
        assert all(isinstance(v, str) for v in service.get("environment", {}).values()), f"{name}: environment values must be strings"
        for key, value in service.get("healthcheck", {}).items():
            assert key in HEALTHCHECK_KEYS and isinstance(value, HEALTHCHECK_KEYS[key]), f"{name}.healthcheck.{key}"


def _container_ports(service: dict) -> set[int]:
    return {int(port.rsplit(":", 1)[1]) for port in service.get("ports", [])}


def _mounted_at(service: dict, target: str) -> Path:
    """The infra file or folder a service mounts at ``target``."""
    sources = [v.split(":")[0] for v in service.get("volumes", []) if v.split(":")[1] == target]
    assert len(sources) == 1 and sources[0].startswith("./"), f"nothing of infra/ is mounted at {target}"
    return INFRA / sources[0]


def test_prometheus_scrapes_the_serving_service(compose):
    services = compose["services"]
    config = yaml.safe_load(_mounted_at(services["prometheus"], "/etc/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    serving = jobs["attnloop-serving"]
    assert serving.get("metrics_path", "/metrics") in {route.path for route in metrics_router.routes}
    targets = [target for group in serving["static_configs"] for target in group["targets"]]
    assert targets
    for target in targets:
        host, port = target.rsplit(":", 1)
        assert host in services, f"{target}: no compose service {host!r}"
        assert int(port) in _container_ports(services[host]), f"{target}: {host} listens on {_container_ports(services[host])}"
    assert f"--port {port}" in " ".join(services["serving"]["command"]), "the scraped port is the one uvicorn serves on"


def test_grafana_reads_prometheus_and_the_dashboards_folder(compose):
    services = compose["services"]
    grafana = services["grafana"]
    provisioning = _mounted_at(grafana, "/etc/grafana/provisioning")
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    host, port = source["url"].removeprefix("http://").split(":")
    assert source["type"] == "prometheus" and host == "prometheus" and int(port) in _container_ports(services["prometheus"])
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "dashboards.yml").read_text())["providers"]
    dashboards = _mounted_at(grafana, provider["options"]["path"])
    assert (dashboards / "attnloop-serving.json").is_file()
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    dashboard = json.loads((dashboards / "attnloop-serving.json").read_text())
    named = {target["datasource"]["uid"] for panel in dashboard["panels"] for target in panel["targets"]}
    assert named == {source["uid"]}, "every query reads the provisioned data source"


def exported_samples() -> dict[str, set[str]]:
    """``{sample name: its label names}`` of a real exposition of serving's metrics, one of each observed."""
    metrics = ServingMetrics(model_version=lambda: "7")
    metrics.observe_request(endpoint="/predict", method="POST", status=200, seconds=0.02)
    metrics.observe_prediction(label="square", confidence=0.9)
    metrics.observe_rejection("corrupt")
    body, _ = metrics.exposition(None)
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    return samples


def test_the_dashboard_queries_what_serving_exports():
    dashboard = json.loads((INFRA / "grafana" / "dashboards" / "attnloop-serving.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    exported = exported_samples()
    labels = set().union(*exported.values())
    queried = set()
    for expr in exprs:
        names = set(re.findall(r"\battnloop_\w+", expr))
        assert names and names <= set(exported), f"{expr!r} names {sorted(names - set(exported))}, which serving does not export"
        queried |= names
        for group in re.findall(r"\bby \(([^)]*)\)", expr):
            assert {g.strip() for g in group.split(",")} <= labels, f"{expr!r} groups by a label serving does not set"
    families = {"attnloop_requests_total", "attnloop_request_duration_seconds_bucket", "attnloop_model_info",
                "attnloop_predictions_total", "attnloop_prediction_confidence_bucket", "attnloop_rejected_images_total"}
    assert families <= queried, f"the dashboard shows nothing of {sorted(families - queried)}"


def test_the_secrets_check_refuses_a_weak_grafana_password():
    values = {name: secrets.token_hex(20) for name in SECRETS}

    def check(**override: str) -> subprocess.CompletedProcess:
        env = {"PATH": os.environ["PATH"], **values, **override}
        return subprocess.run(["sh", str(INFRA / "check-secrets.sh")], check=False, env=env, capture_output=True, text=True, timeout=30)

    accepted = check()
    assert accepted.returncode == 0, accepted.stderr
    for weak in ("", "admin", "short-one"):
        refused = check(GRAFANA_ADMIN_PASSWORD=weak)
        assert refused.returncode == 1 and "GRAFANA_ADMIN_PASSWORD in infra/.env" in refused.stderr, (weak, refused.stderr)


def test_the_demo_needs_no_apt_only_the_tests_install_a_browser():
    """``make demo`` must run where apt is busy or there is no root; the browser is the tests' alone."""
    root = INFRA.parent

    def plan(target: str) -> str:  # what make would run, without running it (-B: as on a fresh clone)
        return subprocess.run(["make", "-n", "-B", target], cwd=root, capture_output=True, text=True, check=True).stdout

    assert "apt-get" not in plan("demo") and "apt-get" not in plan("setup")
    assert "apt-get install" in plan("test") and "chromium" in plan("test")
