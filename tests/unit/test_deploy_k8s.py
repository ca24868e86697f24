"""deploy/k8s: render each kustomize overlay and validate every document against a schema.

- Rendering: ``kubectl kustomize`` (the Debian image of these machines ships kubectl with kustomize
  built in) or a standalone ``kustomize build``; no network is used.
- Built-in kinds: the strict Kubernetes JSON schemas of the ``kubernetes-validate`` wheel (pinned
  dev dependency), for Kubernetes 1.33.
- Strimzi and KEDA kinds: the minimal schemas in deploy/k8s/schemas (provenance in its README).
Then the wiring a schema can't see: probes on the health server, GPU limits, static membership,
secrets by reference only, KEDA bounded by the partitions, Grafana's datasource uid.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from qc_stream.settings import Settings

K8S = Path(__file__).resolve().parents[2] / "deploy/k8s"
OVERLAYS = ["dev", "prod"]
KUBE_VERSION = "1.33"
TOPICS = {"qc.frames", "qc.results", "qc.deadletter", "qc.defect-types", "qc.model-updates"}


def kustomize_cmd(path: Path) -> list[str]:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize", str(path)]
    if shutil.which("kustomize"):
        return ["kustomize", "build", str(path)]
    pytest.fail(
        "needs kubectl (with built-in kustomize) or kustomize on PATH: apt-get install kubectl"
    )


@cache
def render(overlay: str) -> tuple[dict, ...]:
    out = subprocess.run(kustomize_cmd(K8S / "overlays" / overlay), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def crd_schema(doc: dict) -> dict | None:
    group = doc["apiVersion"].split("/")[0]
    version = doc["apiVersion"].split("/")[-1]
    path = K8S / "schemas" / f"{doc['kind'].lower()}-{group}-{version}.json"
    return json.loads(path.read_text()) if path.exists() else None


def validation_errors(doc: dict) -> list[str]:
    if "." in doc["apiVersion"].split("/")[0] and not doc["apiVersion"].endswith(".k8s.io/v1"):
        schema = crd_schema(doc)
        if schema is None:
            return [f"no schema for {doc['kind']} {doc['apiVersion']} in deploy/k8s/schemas"]
        return [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)]
    try:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{'.'.join(map(str, e.path))}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [e.message]
    return []


def one(docs, kind: str, name: str | None = None) -> dict:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def pod_spec(doc: dict) -> dict:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_document_is_valid(overlay):
    docs = render(overlay)
    assert len(docs) > 15
    problems = {
        f"{d['kind']}/{d['metadata']['name']}": errs for d in docs if (errs := validation_errors(d))
    }
    assert problems == {}


def test_validation_rejects_typos_in_builtin_and_custom_kinds():
    docs = render("prod")
    deployment = copy.deepcopy(one(docs, "Deployment", "qc-worker"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {
        "path": "/"
    }
    assert validation_errors(deployment)
    topic = copy.deepcopy(one(docs, "KafkaTopic", "qc-frames"))
    topic["spec"]["partitionz"] = 3
    assert validation_errors(topic)
    scaled = copy.deepcopy(one(docs, "ScaledObject"))
    del scaled["spec"]["scaleTargetRef"]
    assert validation_errors(scaled)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_resource_lands_in_the_overlay_namespace(overlay):
    docs = render(overlay)
    namespace = one(docs, "Namespace")["metadata"]["name"]
    assert all(
        d["metadata"].get("namespace") == namespace for d in docs if d["kind"] != "Namespace"
    )


def test_worker_uses_gpu_probes_graceful_stop_and_static_membership():
    worker = one(render("prod"), "Deployment", "qc-worker")
    spec = pod_spec(worker)
    container = spec["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    config = next(d for d in render("prod") if d["metadata"]["name"].startswith("qc-stream-config"))
    assert container["ports"][0]["containerPort"] == int(config["data"]["QC_HEALTH_PORT"])
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    # Longer than a batch and the production session timeout's hand-over, plus the preStop pause.
    session_s = Settings(broker_profile="production").group_timeouts[0]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert spec["terminationGracePeriodSeconds"] >= session_s + pre_stop
    env = {e["name"]: e for e in container["env"]}
    assert env["QC_GROUP_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert "group_instance_id" in Settings.model_fields
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert (
        worker["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    )  # no extra GPU during rollouts
    assert "replicas" not in worker["spec"]  # KEDA owns it; apply must not reset it


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_keys_are_settings_and_secrets_come_by_reference(overlay):
    docs = render(overlay)
    assert not [d for d in docs if d["kind"] == "Secret"], "secret values must not be committed"
    config = next(
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("qc-stream-config")
    )
    fields = {f"QC_{n.upper()}" for n in Settings.model_fields}
    assert set(config["data"]) <= fields
    Settings(**{k[3:].lower(): v for k, v in config["data"].items()})  # values validate too
    for doc in docs:
        if doc["kind"] not in ("Deployment", "Job", "CronJob"):
            continue
        spec = pod_spec(doc)
        for container in spec.get("initContainers", []) + spec["containers"]:
            for e in container.get("env", []):
                sensitive = any(
                    w in e["name"] for w in ("PASSWORD", "DATABASE_URL", "REDIS_URL", "TOKEN")
                )
                if sensitive:
                    assert "secretKeyRef" in e.get("valueFrom", {}), (
                        f"{doc['metadata']['name']}: {e['name']}"
                    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_scales_the_worker_on_lag_within_the_partitions(overlay):
    docs = render(overlay)
    scaled = one(docs, "ScaledObject")
    assert (
        scaled["spec"]["scaleTargetRef"]["name"]
        == one(docs, "Deployment", "qc-worker")["metadata"]["name"]
    )
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    config = next(
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("qc-stream-config")
    )
    assert meta["consumerGroup"] == config["data"]["QC_APP_ID"]
    assert meta["topic"] == "qc.frames"
    assert meta["bootstrapServers"] == config["data"]["QC_KAFKA_BOOTSTRAP"]
    frames = next(
        d for d in docs if d["kind"] == "KafkaTopic" and d["spec"]["topicName"] == "qc.frames"
    )
    # Workers declare these with QC_TOPIC_PARTITIONS (stream/topics.py): Strimzi must agree.
    for name in ("qc.frames", "qc.results", "qc.deadletter"):
        topic = next(
            d for d in docs if d["kind"] == "KafkaTopic" and d["spec"]["topicName"] == name
        )
        assert topic["spec"]["partitions"] == int(config["data"]["QC_TOPIC_PARTITIONS"]), name
    assert (
        1
        <= scaled["spec"]["minReplicaCount"]
        <= scaled["spec"]["maxReplicaCount"]
        <= frames["spec"]["partitions"]
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_strimzi_kraft_cluster_and_topics(overlay):
    docs = render(overlay)
    kafka = one(docs, "Kafka")
    assert kafka["metadata"]["annotations"]["strimzi.io/kraft"] == "enabled"
    assert "zookeeper" not in kafka["spec"]
    pools = [d for d in docs if d["kind"] == "KafkaNodePool"]
    roles = {r for p in pools for r in p["spec"]["roles"]}
    assert roles == {"controller", "broker"}
    assert all(
        p["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"] for p in pools
    )
    topics = {d["spec"]["topicName"]: d for d in docs if d["kind"] == "KafkaTopic"}
    assert set(topics) == TOPICS
    assert topics["qc.defect-types"]["spec"]["config"]["cleanup.policy"] == "compact"
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    assert all(t["spec"]["replicas"] <= brokers for t in topics.values())
    max_bytes = kafka["spec"]["kafka"]["config"]["message.max.bytes"]
    assert max_bytes >= Settings().kafka_max_request_bytes


def test_jobs_pdb_and_network_policy():
    docs = render("prod")
    migrate = one(docs, "Job", "qc-db-migrate")
    assert pod_spec(migrate)["containers"][0]["args"] == ["db", "upgrade"]
    retrain = one(docs, "CronJob", "qc-retrain")
    assert pod_spec(retrain)["containers"][0]["args"][0] == "retrain"
    assert retrain["spec"]["concurrencyPolicy"] == "Forbid"
    worker_labels = one(docs, "Deployment", "qc-worker")["spec"]["template"]["metadata"]["labels"]
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= worker_labels.items()
    policy = one(docs, "NetworkPolicy", "qc-worker")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= worker_labels.items()
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}


def test_k8s_grafana_provisioning_equals_deploy_grafana():
    # kustomize cannot read deploy/grafana (outside its root), so base/grafana holds copies.
    for k8s_file, source in [
        ("datasources.yaml", "datasources/qc-stream.yaml"),
        ("dashboards.yaml", "dashboards/qc-stream.yaml"),
    ]:
        copy_ = yaml.safe_load((K8S / "base/grafana" / k8s_file).read_text())
        original = yaml.safe_load((K8S.parent / "grafana/provisioning" / source).read_text())
        assert copy_ == original, (
            f"deploy/k8s/base/grafana/{k8s_file} drifted from deploy/grafana/provisioning/{source}"
        )


def test_grafana_is_provisioned_with_the_dashboards_datasource():
    from qc_stream.dashboards.model import DATASOURCE_TYPE, DATASOURCE_UID

    docs = render("prod")
    datasources = next(
        d for d in docs if d["metadata"]["name"].startswith("grafana-provisioning-datasources")
    )
    provisioned = yaml.safe_load(datasources["data"]["datasources.yaml"])["datasources"][0]
    assert (provisioned["uid"], provisioned["type"]) == (DATASOURCE_UID, DATASOURCE_TYPE)
    providers = next(
        d for d in docs if d["metadata"]["name"].startswith("grafana-provisioning-dashboards")
    )
    path = yaml.safe_load(providers["data"]["dashboards.yaml"])["providers"][0]["options"]["path"]
    grafana = one(docs, "Deployment", "qc-grafana")
    build = pod_spec(grafana)["initContainers"][0]
    assert build["args"][:3] == ["dashboards", "build", "--out"] and build["args"][3] == path
    env = {e["name"] for e in pod_spec(grafana)["containers"][0]["env"]}
    needed = set(re.findall(r"\$\{(\w+)\}", datasources["data"]["datasources.yaml"]))
    assert needed <= env, f"missing for Grafana: {sorted(needed - env)}"


def test_compose_and_kubernetes_run_the_same_kafka_and_grafana():
    compose = yaml.safe_load((K8S.parent / "compose.yaml").read_text())["services"]
    docs = render("prod")
    assert (
        compose["kafka"]["image"]
        == f"apache/kafka:{one(docs, 'Kafka')['spec']['kafka']['version']}"
    )
    grafana = pod_spec(one(docs, "Deployment", "qc-grafana"))["containers"][0]["image"]
    assert compose["grafana"]["image"] == grafana
