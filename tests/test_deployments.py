"""flows/prefect.yaml names real flows, with valid schedules, on one work pool."""

import importlib
from pathlib import Path

import yaml
from prefect import Flow
from prefect.client.schemas.schedules import CronSchedule

ROOT = Path(__file__).resolve().parents[1]


def test_every_deployment_points_at_a_flow_with_a_valid_schedule():
    spec = yaml.safe_load((ROOT / "flows" / "prefect.yaml").read_text())
    names = [d["name"] for d in spec["deployments"]]
    assert len(names) == len(set(names)) and {"score", "annotate", "harvest-retrain", "promote", "loop"} <= set(names)
    for deployment in spec["deployments"]:
        path, _, attribute = deployment["entrypoint"].partition(":")
        assert (ROOT / path).is_file(), path
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), attribute)
        assert isinstance(flow, Flow), deployment["entrypoint"]
        assert deployment["work_pool"]["name"] == "attnloop-process"
        for schedule in deployment.get("schedules", []):
            CronSchedule(cron=schedule["cron"])  # raises on an invalid expression
        parameters = set(deployment.get("parameters", {}))
        accepted = set(flow.parameters.properties)
        assert parameters <= accepted, f"{deployment['name']}: unknown parameters {parameters - accepted}"
        assert set(flow.parameters.required or []) <= parameters, f"{deployment['name']}: required parameters missing"
