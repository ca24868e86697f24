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
            min=1,
            max=1024,
            envvar="QC_TOPIC_PARTITIONS",
            help="Pre-create the qc.* topics with this many partitions (default 4).",
        ),
        host: str | None = typer.Option(
            "127.0.0.1", "--host", help="Address to bind and advertise."
        ),
    ) -> None:
        """Run the embedded broker until Ctrl-C or SIGTERM (memory storage: topics vanish when it stops).

        SIGTERM, SIGINT and SIGHUP are forwarded to the broker (SIGKILL after a grace period); on
        Linux the broker is also killed by the kernel if this command dies without cleaning up."""
        import signal

        from qc_stream.devtools.broker import EmbeddedBroker
        from qc_stream.errors import QcError
        from qc_stream.settings import load_settings
        from qc_stream.wire.topics import ensure_topics

        class Stop(Exception):
            pass

        def stop_on(signum, _frame):
            raise Stop(signal.Signals(signum).name)

        settings = load_settings()
        # Handlers before the child exists: a signal during start-up must not orphan it.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, stop_on)
        b = EmbeddedBroker(port=port, host=host, die_with_parent=True)
        exit_code = None
        try:
            b.start()
            ensure_topics(b.bootstrap, partitions or settings.topic_partitions)
            typer.echo(
                f"broker ready on {b.bootstrap} (export QC_KAFKA_BOOTSTRAP={b.bootstrap}); "
                "Ctrl-C stops it",
            )
            exit_code = b.wait()
        except Stop as why:
            typer.echo(f"{why}: stopping the broker", err=True)
        finally:
            # A second Ctrl-C must not cut the clean-up short.
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)
            b.stop(grace_s=5.0)  # tansu waits for its clients to disconnect; then SIGKILL
            typer.echo("broker stopped")
        if exit_code is not None:
            raise QcError(f"the broker exited on its own (code {exit_code})")
