"""`qc-stream worker`: a Faust worker running the inspection and model-update agents."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("worker")
    def worker(
        embedded: bool = typer.Option(
            False,
            "--embedded",
            help="Short group timeouts for the embedded broker (QC_BROKER_PROFILE=embedded).",
        ),
        loglevel: str = typer.Option(None, "--loglevel", help="Log level (default QC_LOG_LEVEL)."),
    ) -> None:
        """Consume qc.frames, inspect micro-batches, store results; Ctrl-C/SIGTERM stops after the batch in flight.

        Reads QC_KAFKA_BOOTSTRAP, QC_DATABASE_URL, QC_REDIS_URL, QC_BACKBONE, QC_DEVICE, QC_BATCH_SIZE...
        """
        import logging

        from qc_stream.settings import load_settings
        from qc_stream.stream.worker import run_worker

        logging.getLogger("kafka").setLevel(
            logging.CRITICAL
        )  # start-up admin calls; failures become one error line

        overrides = {"broker_profile": "embedded"} if embedded else {}
        run_worker(load_settings(**overrides), loglevel=loglevel)
