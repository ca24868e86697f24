"""Kafka client TLS/SASL settings (QC_KAFKA_SECURITY_PROTOCOL and friends) for every client library.

What runs for real here: settings parsing and refusal, a TLS handshake with the context the clients
get (a throw-away CA made with the openssl CLI, a local TLS server; wrong CA and missing client
certificate fail), kafka-python and aiokafka accepting the keyword arguments, and Faust turning the
credentials into aiokafka's. What does not: a SCRAM exchange with a broker. The embedded broker
(tansu 0.6.0) has `--authentication` but its CLI refuses `--cert` with `--key` and cannot create a
SCRAM user once authentication is on, so SASL against a broker is verified by the manifests only
(deploy/README.md, "Verified by schema only").
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from qc_stream.errors import ConfigError
from qc_stream.settings import load_settings
from qc_stream.wire.security import (
    aiokafka_kwargs,
    faust_credentials,
    kafka_python_kwargs,
    ssl_context,
)

SCRAM = dict(
    kafka_security_protocol="SASL_SSL",
    kafka_sasl_mechanism="SCRAM-SHA-512",
    kafka_sasl_username="qc-worker",
    kafka_sasl_password="s3cret",
)


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    assert shutil.which("openssl"), "needs the openssl CLI (Debian package openssl)"
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-days", "1", "-subj", "/CN=qc-test-ca", cwd=d)  # fmt: skip
    (d / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                f"{name}.csr", "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", "1", "-extfile", "san.cnf",
                cwd=d)  # fmt: skip
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out",
            "other.crt", "-days", "1", "-subj", "/CN=other-ca", cwd=d)  # fmt: skip
    return d


def tls_server(pki: Path, *, require_client_cert: bool) -> tuple[int, list[str]]:
    """A one-connection TLS server on 127.0.0.1; returns its port and a list it fills with the
    outcome ("ok" or the error)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / "server.crt", pki / "server.key")
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki / "ca.crt")
    listener = socket.create_server(("127.0.0.1", 0))
    outcome: list[str] = []

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"hi")
                outcome.append("ok")
        except (ssl.SSLError, OSError) as e:
            outcome.append(str(e))
        finally:
            listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1], outcome


def handshake(context: ssl.SSLContext, port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.recv(2)


def test_plaintext_is_the_default_and_adds_nothing_but_the_protocol():
    settings = load_settings()
    assert kafka_python_kwargs(settings) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(settings) is None
    assert ssl_context(settings) is None


@pytest.mark.parametrize(
    "half_set, names",
    [
        (dict(kafka_security_protocol="SASL_SSL"), "QC_KAFKA_SASL_MECHANISM"),
        (dict(SCRAM, kafka_sasl_password=None), "QC_KAFKA_SASL_PASSWORD"),
        (dict(kafka_sasl_username="qc-worker", kafka_sasl_password="x"), "QC_KAFKA_SASL_USERNAME"),
        (dict(kafka_ssl_cafile="/etc/ca.crt"), "QC_KAFKA_SSL_CAFILE"),
        (
            dict(
                kafka_security_protocol="SASL_PLAINTEXT",
                kafka_ssl_cafile="/ca.crt",
                **{k: v for k, v in SCRAM.items() if k != "kafka_security_protocol"},
            ),
            "does not use TLS",
        ),
        (dict(kafka_security_protocol="SSL", kafka_ssl_certfile="/c.crt"), "QC_KAFKA_SSL_KEYFILE"),
    ],
)
def test_half_set_security_is_refused_with_the_variable_named(half_set, names):
    with pytest.raises(ConfigError, match=names):
        load_settings(**half_set)


def test_unknown_protocol_or_mechanism_is_refused():
    with pytest.raises(ConfigError, match="QC_KAFKA_SECURITY_PROTOCOL"):
        load_settings(kafka_security_protocol="TLS")
    with pytest.raises(ConfigError, match="QC_KAFKA_SASL_MECHANISM"):
        load_settings(**dict(SCRAM, kafka_sasl_mechanism="SCRAM-SHA-1"))


def test_settings_come_from_the_environment(monkeypatch, pki):
    monkeypatch.setenv("QC_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("QC_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("QC_KAFKA_SASL_USERNAME", "qc-camera")
    monkeypatch.setenv("QC_KAFKA_SASL_PASSWORD", "pw")
    monkeypatch.setenv("QC_KAFKA_SSL_CAFILE", str(pki / "ca.crt"))
    kwargs = kafka_python_kwargs(load_settings())
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert (kwargs["sasl_mechanism"], kwargs["sasl_plain_username"]) == (
        "SCRAM-SHA-512",
        "qc-camera",
    )
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)


def test_the_client_context_trusts_the_cluster_ca_only(pki):
    settings = load_settings(**SCRAM, kafka_ssl_cafile=pki / "ca.crt")
    port, outcome = tls_server(pki, require_client_cert=False)
    assert handshake(ssl_context(settings), port) == b"hi"
    stranger = load_settings(**SCRAM, kafka_ssl_cafile=pki / "other.crt")
    port, outcome = tls_server(pki, require_client_cert=False)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(ssl_context(stranger), port)


def test_mutual_tls_presents_the_client_certificate(pki):
    base = dict(kafka_security_protocol="SSL", kafka_ssl_cafile=pki / "ca.crt")
    port, outcome = tls_server(pki, require_client_cert=True)
    with_cert = load_settings(
        **base, kafka_ssl_certfile=pki / "client.crt", kafka_ssl_keyfile=pki / "client.key"
    )
    assert handshake(ssl_context(with_cert), port) == b"hi"
    port, outcome = tls_server(pki, require_client_cert=True)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        handshake(ssl_context(load_settings(**base)), port)
        handshake(ssl_context(load_settings(**base)), port)  # TLS 1.3 reports it on first read


def test_an_unreadable_ca_file_is_one_config_error(tmp_path):
    settings = load_settings(**SCRAM, kafka_ssl_cafile=tmp_path / "missing.crt")
    with pytest.raises(ConfigError, match="QC_KAFKA_SSL_CAFILE"):
        kafka_python_kwargs(settings)


def test_kafka_python_and_aiokafka_accept_the_arguments(pki):
    from aiokafka import AIOKafkaConsumer
    from kafka import KafkaProducer

    settings = load_settings(**SCRAM, kafka_ssl_cafile=pki / "ca.crt")
    # api_version given: no broker round trip at construction; nothing listens on port 1.
    producer = KafkaProducer(
        bootstrap_servers="127.0.0.1:1", api_version=(2, 8), **kafka_python_kwargs(settings)
    )
    try:
        assert producer.config["security_protocol"] == "SASL_SSL"
        assert producer.config["sasl_mechanism"] == "SCRAM-SHA-512"
        assert producer.config["ssl_context"] is not None
    finally:
        producer.close(timeout=0)

    async def construct() -> AIOKafkaConsumer:  # aiokafka wants a running loop
        return AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1", **aiokafka_kwargs(settings))

    consumer = asyncio.run(construct())
    assert consumer._client._security_protocol == "SASL_SSL"
    assert consumer._client._sasl_mechanism == "SCRAM-SHA-512"


def test_the_faust_app_gets_the_same_credentials(pki):
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from qc_stream.stream.app import build_app

    settings = load_settings(**SCRAM, kafka_ssl_cafile=pki / "ca.crt")
    app = build_app(settings)
    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("qc-worker", "s3cret")
    assert isinstance(auth["ssl_context"], ssl.SSLContext)
    tls_only = build_app(load_settings(kafka_security_protocol="SSL"))
    assert credentials_to_aiokafka_auth(tls_only.conf.broker_credentials)["security_protocol"] == (
        "SSL"
    )


def test_ensure_topics_leaves_topics_it_may_not_create_to_the_cluster(monkeypatch):
    """On a secured cluster a client's ACLs hide the topics it does not use and forbid creating
    them (the Topic Operator owns them). No broker with ACLs runs here (the embedded one has no
    SCRAM users), so the admin client is a stand-in that answers as Kafka's authorizer does."""
    import kafka.admin
    from kafka.errors import TopicAuthorizationFailedError

    from qc_stream.wire import topics

    asked: list[str] = []
    received: dict = {}

    class SecuredClusterAdmin:
        def __init__(self, **kwargs):
            received.update(kwargs)

        def list_topics(self):
            return ["qc.frames"]  # the only topic a camera may describe

        def create_topics(self, new_topics):
            asked.extend(t.name for t in new_topics)
            raise TopicAuthorizationFailedError()

        def close(self):
            pass

    monkeypatch.setattr(kafka.admin, "KafkaAdminClient", SecuredClusterAdmin)
    security = kafka_python_kwargs(load_settings(**SCRAM))
    topics.ensure_topics("kafka:9093", 12, replication_factor=3, client_kwargs=security)
    assert set(asked) == set(topics.ALL) - {"qc.frames"}
    assert received["security_protocol"] == "SASL_SSL"
    assert received["sasl_plain_username"] == "qc-worker"
