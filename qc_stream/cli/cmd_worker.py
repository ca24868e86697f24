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
        log_level: str | None = typer.Option(
            None,
            "--log-level",
            envvar="QC_LOG_LEVEL",
            help="DEBUG, INFO, WARNING or ERROR (default INFO).",
        ),
    ) -> None:
        """Consume qc.frames, inspect micro-batches, store results; Ctrl-C/SIGTERM stops after the batch in flight.

        Reads QC_KAFKA_BOOTSTRAP, QC_DATABASE_URL, QC_REDIS_URL, QC_BACKBONE, QC_DEVICE, QC_BATCH_SIZE...
        """
        import logging

        from qc_stream.settings import load_settings

        overrides: dict = {"broker_profile": "embedded"} if embedded else {}
        if log_level:  # validated with the other settings: a bad level is one line, exit 2
            overrides["log_level"] = log_level.upper()
        settings = load_settings(**overrides)  # before Faust loads: a bad setting fails at once

        from qc_stream.stream.worker import run_worker

        logging.getLogger("kafka").setLevel(
            logging.CRITICAL
        )  # start-up admin calls; failures become one error line
        run_worker(settings)
