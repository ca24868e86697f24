"""deploy/compose.yaml against the Compose Specification schema, plus the wiring the schema can't see.

The schema is the compose-spec JSON schema vendored in the check-jsonschema wheel (a pinned dev
dependency), read from its package folder so nothing is downloaded. There is no Docker engine here,
so the stack itself is not started; docs/deploy.md covers that.
"""

from __future__ import annotations

import copy
import json
import re
from importlib.util import find_spec
from pathlib import Path

import jsonschema
import pytest
import yaml

from qc_stream.settings import Settings, load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
TOPICS = {"qc.frames", "qc.results", "qc.deadletter", "qc.defect-types", "qc.model-updates"}
# Keys of .env.example that are compose-level knobs or image env, not qc-stream settings.
COMPOSE_ONLY = {
    "QC_WORKERS",
    "QC_CAMERA_PRODUCT",
    "QC_CAMERA_FPS",
    "QC_GRAFANA_DB_USER",
    "QC_GRAFANA_DB_PASSWORD",
}


def compose_schema() -> dict:
    # find_spec locates the package without importing it (its CLI import chain is not needed here).
    root = Path(find_spec("check_jsonschema").origin).parent
    return json.loads((root / "builtin_schemas/vendor/compose-spec.json").read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def schema_errors(doc: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(compose_schema())
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]


def env_example() -> dict[str, str]:
    pairs = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key] = value
    return pairs


def test_compose_file_matches_the_compose_specification(compose):
    assert schema_errors(compose) == []


def test_the_schema_check_rejects_a_broken_file(compose):
    broken = copy.deepcopy(compose)
    broken["services"]["worker"]["depends_on"]["kafka"]["condition"] = (
        "service_ready"  # no such condition
    )
    broken["services"]["kafka"]["healthcheck"]["intervall"] = "5s"  # typo
    errors = schema_errors(broken)
    assert any("depends_on" in e for e in errors)
    assert any("intervall" in e for e in errors)


def test_start_up_order_waits_on_health_and_completed_jobs(compose):
    services = compose["services"]
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep] and not services[dep]["healthcheck"].get(
                    "disable"
                )
            if cond["condition"] == "service_completed_successfully":
                assert services[dep].get("restart") == "no", f"{dep} is a one-shot job"
    worker = services["worker"]["depends_on"]
    assert worker["kafka"]["condition"] == "service_healthy"
    assert worker["migrate"]["condition"] == "service_completed_successfully"
    assert worker["topic-init"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["camera"]["command"][:3] == ["camera", "--source", "synthetic"]


def test_workers_reserve_a_gpu_and_get_time_to_finish_a_batch(compose):
    for name in ("worker", "retrain"):
        devices = compose["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    grace = compose["services"]["worker"]["stop_grace_period"]
    assert grace.endswith("s") and int(grace[:-1]) >= 30


def test_kafka_is_single_node_kraft_pinned_with_frame_sized_limits(compose):
    kafka = compose["services"]["kafka"]
    image, _, tag = kafka["image"].partition(":")
    assert image == "apache/kafka" and tag and tag != "latest"
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "ZOOKEEPER" not in " ".join(env)
    settings = load_settings(
        **{
            k[3:].lower(): v
            for k, v in env_example().items()
            if k.startswith("QC_") and k not in COMPOSE_ONLY
        }
    )
    assert int(env["KAFKA_MESSAGE_MAX_BYTES"]) >= settings.kafka_max_request_bytes


def test_topic_init_creates_every_topic_and_compacts_defect_types(compose):
    script = compose["services"]["topic-init"]["command"][0]
    created = {
        line.split("--topic")[1].split()[0] for line in script.splitlines() if "--topic" in line
    }
    assert created == TOPICS
    defect_line = next(line for line in script.splitlines() if "qc.defect-types" in line)
    assert "cleanup.policy=compact" in defect_line
    assert "--if-not-exists" in script  # safe to run on every `up`
    for name in ("qc.frames", "qc.results", "qc.deadletter"):  # as the workers declare them
        line = next(line for line in script.splitlines() if f"--topic {name} " in line)
        assert '--partitions "$${QC_TOPIC_PARTITIONS}"' in line, name


def test_env_example_holds_only_real_settings_and_they_validate():
    env = env_example()
    qc_keys = {k for k in env if k.startswith("QC_")} - COMPOSE_ONLY
    fields = {f"QC_{name.upper()}" for name in Settings.model_fields}
    assert qc_keys <= fields, f"not settings: {sorted(qc_keys - fields)}"
    settings = load_settings(**{k[3:].lower(): v for k, v in env.items() if k in qc_keys})
    assert settings.broker_profile == "production"
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert settings.kafka_bootstrap == "kafka:9092"


def test_every_service_image_is_pinned(compose):
    for name, svc in compose["services"].items():
        image = svc.get("image")
        assert image, f"{name} has no image"
        assert ":" in image and not image.endswith(":latest"), f"{name}: unpinned image {image}"


def test_grafana_is_provisioned_from_deploy_grafana(compose):
    grafana = compose["services"]["grafana"]
    mounts = dict(v.rsplit(":", 2)[:2] for v in grafana["volumes"])
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    # The provider YAML of deploy/grafana names the folder the built dashboards are mounted at.
    provider = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/qc-stream.yaml").read_text()
    )
    assert mounts["./grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    assert sorted((DEPLOY / "grafana/dashboards").glob("*.json")), "built dashboards missing"
    # Every ${VAR} the datasource file needs is in Grafana's environment.
    datasource = (DEPLOY / "grafana/provisioning/datasources/qc-stream.yaml").read_text()
    needed = set(re.findall(r"\$\{(\w+)\}", datasource))
    assert needed <= set(grafana["environment"]), (
        f"missing for Grafana: {sorted(needed - set(grafana['environment']))}"
    )
    assert "env_file" not in grafana  # the shared env file holds the Postgres owner's password
    role_job = compose["services"]["grafana-role"]
    assert "./grafana:/grafana:ro" in role_job["volumes"]
    assert (
        DEPLOY / "grafana/readonly-role.sql"
    ).exists() and "/grafana/readonly-role.sql" in role_job["command"][0]
