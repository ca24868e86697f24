"""`qc-stream retrain`: full refresh (train, evaluate, gate, promote) on demand or as a listener."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from qc_stream.cli.output import json_path_option


def register(app: typer.Typer) -> None:
    @app.command("retrain")
    def retrain(
        examples: Path | None = typer.Option(
            None,
            "--examples",
            help="Labelled examples: DIR/<product>/<defect>/*.png (+ masks/, good/); see docs/registry.md.",
        ),
        quick: bool = typer.Option(
            False, "--quick", help="A few steps on little data (minutes on a CPU)."
        ),
        tolerance: float | None = typer.Option(
            None,
            "--tolerance",
            min=0.0,
            max=1.0,
            envvar="QC_RETRAIN_TOLERANCE",
            help="Allowed drop per holdout metric (default 0.02).",
        ),
        lr: float = typer.Option(1e-3, "--lr", help="Learning rate (Adam)."),
        shuffle_labels: bool = typer.Option(
            False, "--shuffle-labels", hidden=True, help="Break the labels (gate demo)."
        ),
        seed: int = typer.Option(0, "--seed"),
        json_path: Path | None = json_path_option("the report (metrics, decision)"),
        listen: bool = typer.Option(
            False,
            "--listen",
            help="Run as a listener on qc.defect-types: debounced zero-shot refresh per change.",
        ),
        retrain_on_change: bool = typer.Option(
            False,
            "--retrain-on-change",
            help="With --listen: also run this full retrain after each refresh.",
        ),
    ) -> None:
        """Retrain prompts on synthetic + labelled data and promote the result only if it does not regress."""
        import logging

        from qc_stream.registry.retrain import RetrainJob, RetrainOptions
        from qc_stream.registry.versions import PromptVersions
        from qc_stream.settings import load_settings

        logging.getLogger("kafka").setLevel(logging.CRITICAL)
        settings = load_settings()
        options = RetrainOptions(
            examples_dir=examples,
            quick=quick,
            tolerance=settings.retrain_tolerance if tolerance is None else tolerance,
            lr=lr,
            shuffle_labels=shuffle_labels,
            seed=seed,
            progress=not listen,
        )

        def full(versions) -> None:
            report = RetrainJob(versions, options).run()
            typer.echo(report.message)
            if json_path:
                json_path.parent.mkdir(parents=True, exist_ok=True)
                json_path.write_text(
                    json.dumps(
                        {
                            "promoted": report.promoted,
                            "version": report.version,
                            "reasons": report.decision.reasons,
                            "candidate": report.candidate_metrics,
                            "active": report.active_metrics,
                        },
                        indent=2,
                        default=lambda x: None,
                    )
                )

        with PromptVersions.from_settings(settings) as versions:
            if not listen:
                full(versions)
                return
            from qc_stream.registry.listener import RegistryListener

            def on_change() -> None:
                typer.echo(versions.zero_shot_refresh().message)
                if retrain_on_change:
                    full(versions)

            from qc_stream.wire.security import kafka_python_kwargs

            health = None
            if settings.health_port >= 0 and not retrain_on_change:
                # Liveness for the listener pod: 503 when the poll loop stops beating. Not with
                # --retrain-on-change, whose full retrain holds the loop for far longer.
                from qc_stream.observability.server import HealthServer

                health = HealthServer(
                    port=settings.health_port, stale_after_s=settings.health_stale_s
                ).start()
            listener = RegistryListener(
                settings.kafka_bootstrap,
                on_change,
                debounce_s=settings.registry_debounce_s,
                partitions=settings.topic_partitions,
                replication_factor=settings.topic_replication_factor,
                client_kwargs=kafka_python_kwargs(settings),
                heartbeat=_listener_beat(health) if health else None,
            )
            typer.echo(
                f"listening on qc.defect-types at {settings.kafka_bootstrap} "
                f"(debounce {settings.registry_debounce_s:g} s"
                f"{', then full retrain' if retrain_on_change else ''}); Ctrl-C stops"
            )
            try:
                listener.run()
            except KeyboardInterrupt:
                listener.stop()
            finally:
                if health:
                    health.stop()


def _listener_beat(health):
    """Called once per poll of the listener loop, which runs only after the listener is ready."""

    def beat() -> None:
        health.beat()
        if not health.ready.is_set():
            health.set_ready(True)

    return beat
