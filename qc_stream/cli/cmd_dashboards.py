"""`qc-stream dashboards build|push`: Grafana dashboards as code."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    dashboards = typer.Typer(
        help="Grafana dashboards as code: build JSON files, push through the HTTP API.",
        no_args_is_help=True,
    )

    @dashboards.command("build")
    def build(
        out: Path = typer.Option(
            ..., "--out", help="Folder for the dashboard JSON files (one per dashboard)."
        ),
    ) -> None:
        """Write one Grafana dashboard JSON per dashboard into OUT."""
        from qc_stream.dashboards.build import write_dashboards

        for path in write_dashboards(out):
            typer.echo(str(path))

    @dashboards.command("push")
    def push(
        url: str | None = typer.Option(
            None, "--url", envvar="QC_GRAFANA_URL", help="Grafana base URL (http://grafana:3000)."
        ),
        token: str | None = typer.Option(
            None,
            "--token",
            envvar="QC_GRAFANA_TOKEN",
            help="Service-account token (Admin: it creates the datasource).",
        ),
        directory: Path | None = typer.Option(
            None, "--dir", help="Push the JSON files in this folder instead of building them now."
        ),
        folder: str | None = typer.Option(
            None,
            "--folder",
            envvar="QC_GRAFANA_FOLDER",
            help="Title of the Grafana folder (default qc-stream).",
        ),
        db_url: str | None = typer.Option(
            None,
            "--db-url",
            envvar="QC_GRAFANA_DB_URL",
            help="Postgres URL Grafana's datasource logs in with (default: QC_DATABASE_URL).",
        ),
        no_datasource: bool = typer.Option(
            False, "--no-datasource", help="Leave the datasource alone."
        ),
    ) -> None:
        """Create or update the folder, the PostgreSQL datasource and the dashboards (idempotent)."""
        from qc_stream.dashboards.build import build_all, read_dashboards
        from qc_stream.dashboards.push import GrafanaPusher, datasource_payload
        from qc_stream.errors import ConfigError
        from qc_stream.settings import load_settings

        settings = load_settings()
        url = url or settings.grafana_url
        if not url:
            raise ConfigError("no Grafana URL: pass --url or set QC_GRAFANA_URL")
        pusher = GrafanaPusher(
            url, token or settings.grafana_token, timeout_s=settings.grafana_timeout_s
        )
        dashboards = read_dashboards(directory) if directory else build_all()
        datasource = (
            None
            if no_datasource
            else datasource_payload(db_url or settings.grafana_db_url or settings.database_url)
        )
        report = pusher.push(dashboards, datasource, folder_title=folder or settings.grafana_folder)
        typer.echo(f"folder {folder or settings.grafana_folder!r}: {report.folder}")
        if datasource is not None:
            typer.echo(f"datasource {datasource['name']!r}: {report.datasource}")
        for uid, status in report.dashboards.items():
            typer.echo(f"dashboard {uid}: {status}")

    app.add_typer(dashboards, name="dashboards")
