"""`qc-stream camera`: one camera producer (synthetic, directory, video file, RTSP/USB)."""

from __future__ import annotations

import sys

import typer


def register(app: typer.Typer) -> None:
    @app.command("camera")
    def camera(
        source: str = typer.Option(
            "synthetic", "--source", help="synthetic | DIR | VIDEO file | rtsp://… | usb:N"
        ),
        camera_id: str = typer.Option("cam-1", "--camera-id"),
        line: str = typer.Option("line-1", "--line"),
        product: str = typer.Option(
            None,
            "--product",
            help="Product on this line (required for synthetic; default 'unknown' otherwise).",
        ),
        fps: float = typer.Option(
            None, "--fps", min=0.01, help="Pace frames at this rate (default: as fast as possible)."
        ),
        count: int = typer.Option(
            None,
            "--count",
            min=1,
            help="Stop after this many frames (default: until the source ends; synthetic: 100).",
        ),
        defect_rate: float = typer.Option(
            0.2,
            "--defect-rate",
            min=0.0,
            max=1.0,
            help="Synthetic only: share of defective frames.",
        ),
        seed: int = typer.Option(0, "--seed", help="Synthetic only."),
        size: int = typer.Option(
            256, "--size", min=32, max=4096, help="Synthetic only: image side in pixels."
        ),
        health_port: int = typer.Option(
            None,
            "--health-port",
            min=0,
            max=65535,
            help="Serve /healthz (503 when no frame was sent or waited on for QC_HEALTH_STALE_S), "
            "/readyz and /metrics on this port (default: off).",
        ),
    ) -> None:
        """Send frames to qc.frames (key = camera id, metadata in headers). Reads QC_KAFKA_BOOTSTRAP."""
        import logging

        from qc_stream.errors import InputError
        from qc_stream.producers.camera import run_camera
        from qc_stream.producers.producer import FrameProducer
        from qc_stream.producers.sources import open_source
        from qc_stream.settings import load_settings
        from qc_stream.synth.source import synthetic
        from qc_stream.wire.security import kafka_python_kwargs
        from qc_stream.wire.topics import ensure_topics

        logging.getLogger("kafka").setLevel(
            logging.CRITICAL
        )  # connection noise; we report retries ourselves
        settings = load_settings()
        if source == "synthetic" and count is None:
            count = 100
        if source == "synthetic":
            if not product:
                raise InputError("--source synthetic needs --product")
            frames = synthetic(product, count=count, defect_rate=defect_rate, seed=seed, size=size)
        else:

            def on_hidden(names: list[str]) -> None:
                shown = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
                typer.echo(f"{camera_id}: skipping {len(names)} hidden file(s): {shown}", err=True)

            frames = open_source(source, count=count, on_hidden=on_hidden)

        def on_retry(attempt: int, wait: float, why: str) -> None:
            typer.echo(
                f"broker {settings.kafka_bootstrap} unreachable ({why}); retry {attempt} in {wait:.1f} s",
                err=True,
            )

        def on_recover(why: str, backlog: int) -> None:
            typer.echo(
                f"{camera_id}: producer failed ({why}); reconnecting to re-send {backlog} "
                "unacknowledged frame(s)",
                err=True,
            )

        producer = FrameProducer(settings, on_retry=on_retry, on_recover=on_recover)
        ensure_topics(
            settings.kafka_bootstrap,
            settings.topic_partitions,
            replication_factor=settings.topic_replication_factor,
            client_kwargs=kafka_python_kwargs(settings),
        )
        tty = sys.stderr.isatty()
        health = None
        if health_port is not None:
            from qc_stream.observability.server import HealthServer

            health = HealthServer(port=health_port, stale_after_s=settings.health_stale_s).start()
            health.set_ready(True)  # connected: the producer exists and the topics are checked

        def progress(s) -> None:
            if health is not None:  # at least once a second while sending or waiting out a broker
                health.beat()
            line = (
                f"{camera_id}: {s.acked} frame(s) acknowledged in {s.seconds:.1f} s "
                f"({s.fps:.1f} fps), {s.backlog} unacknowledged, {s.retries} retries"
            )
            if s.skipped:
                line += f", {len(s.skipped)} refused"
            typer.echo(("\r" + line) if tty else line, err=True, nl=not tty)

        try:
            stats = run_camera(
                producer,
                frames,
                camera_id=camera_id,
                line_id=line,
                product=product or "unknown",
                fps=fps,
                count=count,
                progress=progress,
            )
        finally:
            producer.close()
            if health is not None:
                health.stop()
        if tty:
            typer.echo("", err=True)
        typer.echo(
            f"{camera_id}: {stats.acked} frame(s) delivered to qc.frames"
            + (f", {len(stats.skipped)} refused (too large)" if stats.skipped else "")
            + (f", {stats.retries} producer retries" if stats.retries else "")
            + (" (interrupted)" if stats.interrupted else "")
        )
        if stats.skipped and not stats.sent:
            from qc_stream.errors import InputError

            raise InputError(stats.skipped[0])
