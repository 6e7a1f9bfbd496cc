"""infra/k8s holds together: manifests parse, images are pinned, names agree with each other, with
the README, with the compose stack and with the variables attnloop reads; the work pool's base
job template is one Prefect can fill in."""

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "infra" / "k8s"
NAMESPACE = "attnloop"
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                found.append({**doc, "_file": path.name})
    return found


@pytest.fixture(scope="module")
def template() -> dict:
    return json.loads((K8S / "base-job-template.json").read_text())


@pytest.fixture(scope="module")
def readme() -> str:
    return (K8S / "README.md").read_text()


def of_kind(objects, kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def walk(node, key: str):
    """Every value stored under ``key`` anywhere in a nested document."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from walk(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item, key)


def containers(objects) -> list[tuple[str, dict]]:
    return [(f"{o['kind']}/{o['metadata']['name']}", c) for o in objects if o["kind"] == "Deployment" for c in o["spec"]["template"]["spec"]["containers"]]


def test_every_manifest_parses_into_named_objects_in_the_namespace(objects):
    files = {o["_file"] for o in objects}
    assert files == {p.name for p in K8S.glob("*.yaml")} and len(files) >= 8
    for o in objects:
        assert o.get("apiVersion") and o.get("kind") and o.get("metadata", {}).get("name"), f"{o['_file']}: {o}"
        if o["kind"] != "Namespace":
            assert o["metadata"].get("namespace") == NAMESPACE, f"{o['_file']}: {o['kind']}/{o['metadata']['name']} is not in {NAMESPACE}"
    assert set(of_kind(objects, "Namespace")) == {NAMESPACE}
    kinds = {o["kind"] for o in objects}
    assert {"ServiceAccount", "Role", "RoleBinding", "Deployment", "Service", "ConfigMap", "Secret", "PersistentVolumeClaim"} <= kinds


def test_images_are_pinned_and_versions_agree(objects, template):
    images = [c["image"] for _, c in containers(objects)] + [template["variables"]["properties"]["image"]["default"]]
    for image in images:
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), f"image {image!r} is not pinned"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    prefect = yaml.safe_load((ROOT / "flows" / "prefect.yaml").read_text())["prefect-version"]
    compose = yaml.safe_load((ROOT / "infra" / "docker-compose.yml").read_text())["services"]["prefect"]["image"]
    for image in images:
        name, tag = image.rsplit(":", 1)
        if name.endswith("/attnloop"):
            assert tag == project, f"{image}: the attnloop image is tagged with the project's version {project}"
        else:
            assert name == "prefecthq/prefect" and tag.startswith(f"{prefect}-") and compose.startswith(f"{name}:{prefect}-"), image


def test_the_worker_polls_the_pool_the_readme_deploys_to(objects, readme):
    worker = of_kind(objects, "Deployment")["prefect-worker"]
    args = worker["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == ["prefect", "worker", "start"] and args[args.index("--type") + 1] == "kubernetes"
    pool = args[args.index("--pool") + 1]
    created = re.findall(r"prefect work-pool create (\S+) --type kubernetes --base-job-template infra/k8s/base-job-template\.json", readme)
    deployed = re.findall(r"prefect deploy --prefect-file flows/prefect\.yaml .*--pool (\S+)", readme)
    assert created == [pool] and deployed == [pool], (created, deployed, pool)
    names = re.search(r"for name in ([\w -]+); do", readme)[1].split()
    spec = yaml.safe_load((ROOT / "flows" / "prefect.yaml").read_text())
    assert names == [d["name"] for d in spec["deployments"]], "the README deploys every deployment of flows/prefect.yaml"


def test_every_file_the_readme_applies_exists_and_every_manifest_is_described(readme):
    applied = set(re.findall(r"infra/k8s/([\w.-]+\.(?:yaml|json))", readme))
    on_disk = {p.name for p in K8S.iterdir() if p.suffix in (".yaml", ".json")}
    assert applied <= on_disk, f"the README names missing files {applied - on_disk}"
    assert on_disk <= applied | set(re.findall(r"`([\w.-]+\.(?:yaml|json))`", readme)), "every manifest is described in the README"


def known_variables() -> set[str]:
    """Names attnloop reads (code, deployments), the example env file and the compose stack's attnloop environment."""
    names = set()
    for path in [*(ROOT / "platform").rglob("*.py"), *(ROOT / "serving").glob("*.py"), *(ROOT / "flows").glob("*.py")]:
        names |= set(re.findall(r"\"((?:ATTNLOOP|MLFLOW|AWS)_[A-Z0-9_]+)\"", path.read_text()))
    names |= set(re.findall(r"\{\{ \$([A-Z0-9_]+) \}\}", (ROOT / "flows" / "prefect.yaml").read_text()))
    names |= {line.split("=", 1)[0] for line in (ROOT / "infra" / ".env.example").read_text().splitlines() if "=" in line and not line.startswith("#")}
    compose = yaml.safe_load((ROOT / "infra" / "docker-compose.yml").read_text())
    return names | set(compose["x-attnloop-env"])


def test_environment_variables_are_ones_attnloop_or_prefect_reads(objects):
    known = known_variables()
    assert {"ATTNLOOP_STORE", "MLFLOW_TRACKING_URI", "AWS_SECRET_ACCESS_KEY", "ATTNLOOP_LABEL_STUDIO_TOKEN", "ATTNLOOP_DASK_ADDRESS"} <= known
    config = of_kind(objects, "ConfigMap")["attnloop-config"]["data"]
    secret = of_kind(objects, "Secret")["attnloop-secrets"]["stringData"]
    used = set(config) | set(secret) | {e["name"] for _, c in containers(objects) for e in c.get("env", [])}
    unknown = {n for n in used if n not in known and not n.startswith("PREFECT_")}
    assert not unknown, f"variables nothing reads: {sorted(unknown)}"
    compose = yaml.safe_load((ROOT / "infra" / "docker-compose.yml").read_text())["x-attnloop-env"]
    assert set(compose) <= set(config) | set(secret), f"missing from the ConfigMap and Secret: {sorted(set(compose) - set(config) - set(secret))}"
    assert not set(config) & set(secret)
    assert not [n for n in config if re.search(r"SECRET|TOKEN|PASSWORD|ACCESS_KEY", n)], "secrets belong in the Secret"
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "ATTNLOOP_LABEL_STUDIO_TOKEN", "ATTNLOOP_SERVING_TOKEN"} <= set(secret)
    assert all(isinstance(v, str) for v in [*config.values(), *secret.values()]), "ConfigMap and Secret values must be strings"


def test_references_between_objects_resolve(objects):
    names = {kind: set(of_kind(objects, kind)) for kind in ("ConfigMap", "Secret", "ServiceAccount", "PersistentVolumeClaim", "Role")}
    for o in objects:
        if o["kind"] == "Deployment":
            spec = o["spec"]
            labels = spec["template"]["metadata"]["labels"]
            assert spec["selector"]["matchLabels"].items() <= labels.items(), f"{o['metadata']['name']}: selector does not match its pods"
            assert spec["template"]["spec"]["serviceAccountName"] in names["ServiceAccount"]
        for ref in walk(o, "configMapRef"):
            assert ref["name"] in names["ConfigMap"]
        for ref in walk(o, "configMapKeyRef"):
            assert ref["key"] in of_kind(objects, "ConfigMap")[ref["name"]]["data"]
        for ref in walk(o, "secretRef"):
            assert ref["name"] in names["Secret"]
    deployments = of_kind(objects, "Deployment")
    for service in of_kind(objects, "Service").values():
        pods = [d for d in deployments.values() if service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(pods) == 1, f"service {service['metadata']['name']} selects {len(pods)} deployments"
        ports = {p["name"] for c in pods[0]["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports


def test_the_worker_may_create_and_follow_jobs(objects):
    role = of_kind(objects, "Role")["prefect-worker"]
    binding = of_kind(objects, "RoleBinding")["prefect-worker"]
    worker = of_kind(objects, "Deployment")["prefect-worker"]["spec"]["template"]["spec"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "prefect-worker"}
    assert {"kind": "ServiceAccount", "name": worker["serviceAccountName"], "namespace": NAMESPACE} in binding["subjects"]

    def allowed(group: str, resource: str, verb: str) -> bool:
        return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in role["rules"])

    assert all(allowed("batch", "jobs", v) for v in ("create", "get", "list", "watch", "delete"))
    assert all(allowed("", r, v) for r in ("pods", "pods/log") for v in ("get", "list", "watch"))
    env = {e["name"]: e.get("value") for e in worker["containers"][0]["env"]}
    assert env["PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES"] == NAMESPACE  # a Role, not a ClusterRole, is enough
    assert env["PREFECT_KUBERNETES_CLUSTER_UID"]


def test_serving_is_ready_on_health_and_checked_for_liveness(objects):
    container = of_kind(objects, "Deployment")["serving"]["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/live"
    assert "serving.app:create_app" in container["command"]


def test_dask_cluster_is_where_the_flow_looks_for_it(objects):
    from attnloop.config import DASK_ADDRESS_ENV

    address = of_kind(objects, "ConfigMap")["attnloop-config"]["data"][DASK_ADDRESS_ENV]
    host, port = re.fullmatch(r"tcp://([\w.-]+):(\d+)", address).groups()
    service = of_kind(objects, "Service")[host.split(".")[0]]
    assert host.split(".")[1] == NAMESPACE and int(port) in {p["port"] for p in service["spec"]["ports"]}
    worker = of_kind(objects, "Deployment")["dask-worker"]["spec"]["template"]["spec"]["containers"][0]
    assert worker["command"][:2] == ["dask", "worker"] and address in worker["command"]


def test_base_job_template_is_one_prefect_can_fill(template, objects):
    assert set(template) == {"job_configuration", "variables"}
    config, variables = template["job_configuration"], template["variables"]
    properties = variables["properties"]
    used = set(PLACEHOLDER.findall(json.dumps(config)))
    assert used <= set(properties), f"placeholders without a variable: {sorted(used - set(properties))}"
    assert set(properties) <= used, f"variables no placeholder uses (Prefect would drop them): {sorted(set(properties) - used)}"
    manifest = config["job_manifest"]
    assert (manifest["apiVersion"], manifest["kind"]) == ("batch/v1", "Job")
    pod = manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["name"] == "prefect-job" and pod["restartPolicy"] == "Never"
    assert container["env"] == "{{ env }}" and container["args"] == "{{ command }}"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) and {"cpu", "memory"} <= set(container["resources"]["limits"])
    defaults = {k: v.get("default") for k, v in properties.items()}
    assert defaults["namespace"] == NAMESPACE
    assert defaults["service_account_name"] in of_kind(objects, "ServiceAccount")
    assert container["envFrom"] == [{"configMapRef": {"name": "{{ config_map }}"}}, {"secretRef": {"name": "{{ secret }}"}}]
    assert defaults["config_map"] in of_kind(objects, "ConfigMap") and defaults["secret"] in of_kind(objects, "Secret")
    assert defaults["data_claim"] in of_kind(objects, "PersistentVolumeClaim")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    config_map = of_kind(objects, "ConfigMap")["attnloop-config"]["data"]
    assert mounts["home"] == config_map["ATTNLOOP_HOME"], "ATTNLOOP_HOME is the Job's scratch volume"
    assert {v["name"] for v in pod["volumes"]} == set(mounts)
