"""`qc-stream demo`: the whole pipeline on this machine with embedded defaults."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        frames: int = typer.Option(
            120, "--frames", min=1, help="Frames in total, spread over the cameras."
        ),
        cameras: int = typer.Option(
            3, "--cameras", min=1, max=32, help="Synthetic cameras (one product each)."
        ),
        fps: float = typer.Option(
            2.0, "--fps", min=0.0, help="Frames per second per camera (0: as fast as possible)."
        ),
        defect_rate: float = typer.Option(0.25, "--defect-rate", min=0.0, max=1.0),
        out: Path = typer.Option(
            Path("demo-out"), "--out", help="Output folder: SQLite database, logs, overlay PNGs."
        ),
    ) -> None:
        """Embedded broker + SQLite (or QC_DATABASE_URL) + Redis if reachable + synthetic cameras + a worker."""
        from qc_stream.devtools.demo import DemoPlan, run_demo
        from qc_stream.settings import load_settings

        run_demo(
            load_settings(),
            DemoPlan(
                frames=frames, cameras=cameras, fps=fps or None, defect_rate=defect_rate, out=out
            ),
        )
