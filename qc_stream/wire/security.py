"""Kafka client security from the ``QC_KAFKA_*`` settings, shaped for each client library.

One source for every client: kafka-python (camera producer, admin, small consumers), aiokafka
(direct consumers) and Faust (the worker app). Settings already refuse half-set combinations
(qc_stream/settings.py); here a CA or key file that cannot be read becomes one ``ConfigError``.
"""

from __future__ import annotations

import ssl

from qc_stream.errors import ConfigError
from qc_stream.settings import Settings


def uses_tls(settings: Settings) -> bool:
    return settings.kafka_security_protocol in ("SSL", "SASL_SSL")


def uses_sasl(settings: Settings) -> bool:
    return settings.kafka_security_protocol.startswith("SASL_")


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """A verifying TLS context (the cluster CA, or the system store), with the client certificate
    when one is set; None for plaintext protocols."""
    if not uses_tls(settings):
        return None
    try:
        context = ssl.create_default_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
        )
        if settings.kafka_ssl_certfile:
            context.load_cert_chain(
                str(settings.kafka_ssl_certfile), str(settings.kafka_ssl_keyfile)
            )
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(
            f"cannot load the Kafka TLS files (QC_KAFKA_SSL_CAFILE/CERTFILE/KEYFILE): {e}"
        ) from None
    return context


def kafka_python_kwargs(settings: Settings) -> dict:
    """Keyword arguments for kafka-python's KafkaProducer, KafkaConsumer and KafkaAdminClient."""
    kwargs: dict = {"security_protocol": settings.kafka_security_protocol}
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if uses_sasl(settings):
        kwargs |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": settings.kafka_sasl_password,
        }
    return kwargs


def aiokafka_kwargs(settings: Settings) -> dict:
    """Keyword arguments for aiokafka's AIOKafkaConsumer / AIOKafkaProducer (same names)."""
    return kafka_python_kwargs(settings)


def faust_credentials(settings: Settings):
    """``broker_credentials`` for ``faust.App`` (None: plaintext, Faust's default)."""
    from faust.auth import SASLCredentials, SSLCredentials

    context = ssl_context(settings)
    if uses_sasl(settings):
        return SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return SSLCredentials(context)
    return None
