"""`qc-stream broker`: the embedded Kafka-protocol broker (tansu) in the foreground."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("broker")
    def broker(
        port: int = typer.Option(9092, "--port", help="TCP port to listen on (127.0.0.1)."),
        partitions: int = typer.Option(
            None,
            "--partitions",
            help="Pre-create the qc.* topics with this many partitions (default QC_TOPIC_PARTITIONS).",
        ),
        host: str | None = typer.Option(
            "127.0.0.1", "--host", help="Address to bind and advertise."
        ),
    ) -> None:
        """Run the embedded broker until Ctrl-C (memory storage: topics vanish when it stops)."""
        from qc_stream.devtools.broker import EmbeddedBroker
        from qc_stream.settings import load_settings
        from qc_stream.wire.topics import ensure_topics

        settings = load_settings()
        b = EmbeddedBroker(port=port, host=host).start()
        try:
            ensure_topics(b.bootstrap, partitions or settings.topic_partitions)
            typer.echo(
                f"broker ready on {b.bootstrap} (export QC_KAFKA_BOOTSTRAP={b.bootstrap}); Ctrl-C stops it"
            )
            b.wait()
        except KeyboardInterrupt:
            pass
        finally:
            b.stop()
            typer.echo("broker stopped")
