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
    for job in ("migrate", "kafka-init", "seed-models"):
        assert worker[job]["condition"] == "service_completed_successfully", job
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["camera"]["command"][:3] == ["camera", "--source", "synthetic"]


def worker_services(compose) -> dict[str, dict]:
    return {n: svc for n, svc in compose["services"].items() if svc.get("command") == ["worker"]}


def test_one_worker_per_gpu_and_time_to_finish_a_batch(compose):
    workers = worker_services(compose)
    assert len(workers) >= 2, (
        "a second GPU needs its own service (compose pins devices per service)"
    )
    gpus = []
    for name, svc in workers.items():
        (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
        assert "count" not in device, f"{name}: count puts every replica on the same GPU"
        (gpu,) = device["device_ids"]
        gpus.append(gpu)
        assert svc["deploy"].get("replicas", 1) == 1, f"{name}: replicas would share {gpu}"
        grace = svc["stop_grace_period"]
        assert grace.endswith("s") and int(grace[:-1]) >= 30
    assert len(set(gpus)) == len(gpus), "two worker services on one GPU"
    member_ids = [svc["environment"]["QC_GROUP_INSTANCE_ID"] for svc in workers.values()]
    assert len(set(member_ids)) == len(member_ids)


def test_retrain_run_arguments_reach_the_retrain_command(compose):
    """`docker compose run --rm retrain --quick` replaces the command, keeps the entrypoint."""
    from typer.testing import CliRunner

    from qc_stream.cli.main import app

    retrain = compose["services"]["retrain"]
    argv = retrain["entrypoint"] + ["--quick"]  # what compose runs for `run --rm retrain --quick`
    assert argv[:2] == ["qc-stream", "retrain"] and not retrain.get("command")
    result = CliRunner().invoke(app, argv[1:] + ["--help"])
    assert result.exit_code == 0 and "--quick" in result.output


def test_kafka_is_single_node_kraft_with_scram_only_and_acls(compose):
    kafka = compose["services"]["kafka"]
    image, _, tag = kafka["image"].partition(":")
    assert image == "apache/kafka" and tag and tag != "latest"
    script = kafka["command"][0]
    props = dict(
        line.strip().split("=", 1)
        for line in script.split("cat > /tmp/server.properties <<EOF")[1]
        .split("EOF")[0]
        .splitlines()
        if "=" in line and not line.strip().startswith("#")
    )
    assert props["process.roles"] == "broker,controller"
    protocols = dict(p.split(":") for p in props["listener.security.protocol.map"].split(","))
    client_listeners = [x.split(":")[0] for x in props["listeners"].split(",")]
    for listener in client_listeners:
        if listener != props["controller.listener.names"]:
            assert protocols[listener] == "SASL_PLAINTEXT", listener
    # The controller listener is not advertised to clients.
    assert "CONTROLLER" not in props["advertised.listeners"]
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert "--add-scram" in script  # the admin exists before the first start
    settings = load_settings(
        **{
            k[3:].lower(): v
            for k, v in env_example().items()
            if k.startswith("QC_") and k not in COMPOSE_ONLY
        }
    )
    assert int(props["message.max.bytes"]) >= settings.kafka_max_request_bytes


def kafka_init_lines(compose) -> list[str]:
    return compose["services"]["kafka-init"]["command"][0].splitlines()


def test_kafka_users_and_acls_match_kubernetes(compose):
    """The compose ACLs grant what deploy/k8s/base/strimzi/kafka-users.yaml grants."""
    grants: dict[tuple[str, str], set[str]] = {}
    for line in kafka_init_lines(compose):
        words = line.split()
        if not words or words[0] != "allow":
            continue
        user = words[1]
        ops = {words[i + 1] for i, w in enumerate(words) if w == "--operation"}
        for i, w in enumerate(words):
            if w in ("--topic", "--group"):
                name = words[i + 1].strip('"').replace("$${QC_APP_ID}", "qc-stream")
                grants.setdefault((user, f"{w[2:]}:{name}"), set()).update(ops)
    users = yaml.safe_load_all((DEPLOY / "k8s/base/strimzi/kafka-users.yaml").read_text())
    k8s: dict[tuple[str, str], set[str]] = {}
    for user in users:
        if user["metadata"]["name"] == "qc-keda":
            continue  # no KEDA in compose
        for acl in user["spec"]["authorization"]["acls"]:
            key = (user["metadata"]["name"], f"{acl['resource']['type']}:{acl['resource']['name']}")
            k8s.setdefault(key, set()).update(acl["operations"])
    assert grants == k8s
    created = {line.split()[1] for line in kafka_init_lines(compose) if line.startswith("user ")}
    assert created == {"qc-camera", "qc-worker", "qc-registry"}


def test_every_kafka_client_service_logs_in_as_its_user(compose):
    expected = {"camera": "qc-camera", "registry-listener": "qc-registry", "retrain": "qc-registry"}
    expected |= {name: "qc-worker" for name in worker_services(compose)}
    for name, svc in compose["services"].items():
        env = svc.get("environment") or {}
        if name not in expected:
            assert "QC_KAFKA_SECURITY_PROTOCOL" not in env, name
            continue
        assert env["QC_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT", name
        assert env["QC_KAFKA_SASL_USERNAME"] == expected[name], name
        assert env["QC_KAFKA_SASL_PASSWORD"].startswith("${KAFKA_"), name  # from deploy/.env
        load_settings(**{k[3:].lower(): v for k, v in env.items() if k.startswith("QC_KAFKA")})


def test_the_env_file_with_passwords_is_git_ignored():
    import subprocess

    out = subprocess.run(
        ["git", "check-ignore", "-q", "deploy/.env"], cwd=DEPLOY.parent, capture_output=True
    )
    assert out.returncode == 0, "deploy/.env must be git-ignored"
    out = subprocess.run(
        ["git", "check-ignore", "-q", "deploy/.env.example"], cwd=DEPLOY.parent, capture_output=True
    )
    assert out.returncode == 1


def test_models_volume_is_refreshed_from_each_image_without_losing_published_versions(compose):
    services = compose["services"]
    seed = services["seed-models"]
    script = seed["command"][0]
    assert "cmp -s" in script and "! -path ./prompts/ACTIVE" in script and "cp -Rn" not in script
    models_dir = env_example()["QC_MODELS_DIR"]
    assert f"models:{models_dir}" in seed["volumes"]
    for name in list(worker_services(compose)) + ["registry-listener", "retrain"]:
        assert f"models:{models_dir}" in services[name]["volumes"], name


def test_prometheus_scrapes_the_workers_and_grafana_can_read_it(compose):
    services = compose["services"]
    prometheus = services["prometheus"]
    assert "./prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules.yaml"]
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    (sd,) = jobs["qc-worker"]["dns_sd_configs"]
    assert set(sd["names"]) == set(worker_services(compose))
    assert sd["port"] == int(env_example()["QC_HEALTH_PORT"])
    assert services["grafana"]["environment"]["QC_PROMETHEUS_URL"] == "http://prometheus:9090"


def test_kafka_init_creates_every_topic_bounded_by_bytes_and_time(compose):
    creates = [line for line in kafka_init_lines(compose) if line.startswith("create --topic")]
    created = {line.split("--topic")[1].split()[0].strip('"') for line in creates}
    assert created == TOPICS | {"$${QC_APP_ID}-__assignor-__leader"}  # Faust's leader topic too
    for line in creates:
        assert "--config retention.ms=" in line and "--config retention.bytes=" in line, line
    defect_line = next(line for line in creates if "qc.defect-types" in line)
    assert "cleanup.policy=compact" in defect_line
    script = compose["services"]["kafka-init"]["command"][0]
    assert "--if-not-exists" in script  # safe to run on every `up`
    for name in ("qc.frames", "qc.results", "qc.deadletter"):  # as the workers declare them
        line = next(line for line in creates if f"--topic {name} " in line)
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


def test_long_running_qc_services_are_checked_on_an_endpoint_they_serve(compose):
    services = compose["services"]
    port = env_example()["QC_HEALTH_PORT"]
    camera = services["camera"]
    flag = camera["command"].index("--health-port")
    assert camera["command"][flag + 1] == port  # the camera serves /healthz only when asked
    assert camera["healthcheck"]["test"][-2:] == ["qc_stream.observability.probe", "/healthz"]
    # The listener serves /healthz itself (cli/cmd_retrain.py): the worker image's check applies.
    assert not services["registry-listener"].get("healthcheck", {}).get("disable")
    for svc in worker_services(compose).values():
        assert svc["healthcheck"]["test"][-1] == "/readyz"
