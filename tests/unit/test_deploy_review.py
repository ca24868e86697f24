"""The review station in compose and Kubernetes (rendered by kubectl; no cluster here): its own
Deployment and Service, ready only on its database (/readyz), the frames volume shared with the
workers, the cleanup job, and a network policy that lets it reach only Postgres and DNS."""

from __future__ import annotations

import pytest
import yaml

from tests.unit.test_deploy_k8s import DEPLOY, OVERLAYS, env_of, one, pod_spec, render


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_review_deployment_service_and_frames_volume(overlay):
    docs = render(overlay)
    review = pod_spec(one(docs, "Deployment", "qc-review"))
    container = review["containers"][0]
    assert container["args"][0] == "review"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"  # SELECT on reviews
    assert env_of(container)["QC_REVIEW_SECRET"]["valueFrom"]["secretKeyRef"]["key"] == (
        "review-secret"
    )
    assert [c["args"][:2] for c in review["initContainers"]] == [["db", "wait"]]
    service = one(docs, "Service", "qc-review")
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": "qc-review"}

    def frames_claim(spec):
        mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in spec["volumes"]
            if "persistentVolumeClaim" in v
        }
        return {claims[n]: p for n, p in mounts.items() if n in claims}.get("qc-frames")

    worker = pod_spec(one(docs, "Deployment", "qc-worker"))
    cleanup = one(docs, "CronJob", "qc-frames-cleanup")["spec"]["jobTemplate"]["spec"]["template"]
    config = next(
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("qc-stream-config")
    )["data"]
    for spec in (review, worker, cleanup["spec"]):
        assert frames_claim(spec) == config["QC_FRAME_STORE_DIR"]
    assert cleanup["spec"]["containers"][0]["args"] == ["review", "cleanup"]
    assert one(docs, "PersistentVolumeClaim", "qc-frames")["spec"]["accessModes"] == [
        "ReadWriteMany"
    ]
    policy = one(docs, "NetworkPolicy", "qc-review")["spec"]
    egress_ports = {p["port"] for rule in policy["egress"] for p in rule.get("ports", [])}
    assert egress_ports == {5432, 53}  # Postgres and DNS only


def test_compose_review_service_and_cleanup_job():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    review = compose["services"]["review"]
    assert review["command"][0] == "review" and "8090:8090" in review["ports"]
    assert review["healthcheck"]["test"][-1] == "/readyz"
    assert review["environment"]["QC_HEALTH_PORT"] == review["command"][-1]
    assert "frames:/var/lib/qc-stream/frames" in review["volumes"]
    assert "frames:/var/lib/qc-stream/frames" in compose["services"]["worker"]["volumes"]
    assert compose["services"]["frames-cleanup"]["command"] == ["review", "cleanup"]
