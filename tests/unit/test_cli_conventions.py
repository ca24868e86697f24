"""The CLI conventions every command follows: one spelling per option, `--format table|json` for
listings, `--json PATH` for result files, env var names in help, `qc-stream --version`.

Options are parsed with click's own parser (``make_context``), so no command body runs here; the
listings' output against a real database is in tests/integration/test_registry_cli.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version

import pytest
import typer
from typer.testing import CliRunner

from qc_stream.cli.main import app
from qc_stream.settings import Settings

ROOT = typer.main.get_command(app)


def command(*path: str):
    cmd = ROOT
    for name in path:
        cmd = cmd.commands[name]
    return cmd


def parse(path: tuple[str, ...], args: list[str]) -> dict:
    """The parameters the command's parser makes of ``args`` (the command body does not run)."""
    return command(*path).make_context(" ".join(path), list(args)).params  # it eats args


def refused(path: tuple[str, ...], args: list[str]) -> str:
    """The usage error for ``args`` (exit code 2: the command body never ran)."""
    res = CliRunner().invoke(app, [*path, *args], env={"COLUMNS": "200"})
    assert res.exit_code == 2, res.output
    return res.output


def test_version_prints_the_package_version_without_heavy_imports():
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output == f"qc-stream {version('qc-stream')}\n"
    probe = (
        "import sys\n"
        "from qc_stream.cli.main import run\n"
        "sys.argv = ['qc-stream', '--version']\n"
        "try:\n    run()\nexcept SystemExit:\n    pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'faust', 'sqlalchemy'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    ).stdout.splitlines()
    assert out == [f"qc-stream {version('qc-stream')}", "[]"]


# (command, new spelling, value, parameter, parsed value)
RENAMED = [
    (("bench",), "--batch-size", "8", "batch_size", 8),
    (("worker",), "--log-level", "debug", "log_level", "debug"),
    (("eval",), "--prompt-version", "v1", "prompt_version", "v1"),
    (("models", "calibrate"), "--prompt-version", "v1", "version", "v1"),
    (("defects", "list"), "--format", "json", "output", "json"),
    (("models", "list"), "--format", "json", "output", "json"),
]
# (command, old spelling, a value for it or None for a flag)
REMOVED = [
    (("bench",), "--batch", "8"),
    (("worker",), "--loglevel", "debug"),
    (("eval",), "--prompts", "v1"),
    (("models", "calibrate"), "--version", "v1"),
    (("defects", "list"), "--json", None),
    (("defects", "show"), "--json", None),
    (("models", "list"), "--json", None),
]


@pytest.mark.parametrize("path, option, value, param, parsed", RENAMED)
def test_the_new_spelling_is_accepted(path, option, value, param, parsed):
    assert parse(path, [option, value])[param] == parsed


@pytest.mark.parametrize("path, option, value", REMOVED)
def test_the_old_spelling_is_refused(path, option, value):
    args = ["-p", "pill", "-n", "dent"] if path == ("defects", "show") else []
    assert f"No such option: {option}" in refused(
        path, [*args, option, *([value] if value else [])]
    )


@pytest.mark.parametrize("path", [("defects", "list"), ("defects", "show"), ("models", "list")])
def test_listings_take_table_or_json_and_refuse_other_formats(path):
    args = ["-p", "pill", "-n", "dent"] if path == ("defects", "show") else []
    assert parse(path, args)["output"] == "table"  # the default
    assert parse(path, [*args, "--format", "JSON"])["output"] == "json"
    assert "Invalid value for '--format'" in refused(path, [*args, "--format", "xml"])


@pytest.mark.parametrize("path", [("eval",), ("bench",), ("retrain",)])
def test_result_files_are_json_path_options(path, tmp_path):
    option = next(p for p in command(*path).params if "--json" in p.opts)
    assert not option.is_flag and option.metavar == "PATH"
    out = tmp_path / "report.json"
    assert parse(path, ["--json", str(out)])["json_path"] == out
    assert "is a directory" in refused(path, ["--json", str(tmp_path)])


# (command, option, the QC_ setting it mirrors)
MIRRORED = [
    (("bench",), "--batch-size", "QC_BATCH_SIZE"),
    (("worker",), "--log-level", "QC_LOG_LEVEL"),
    (("eval",), "--prompt-version", "QC_PROMPT_VERSION"),
    (("models", "calibrate"), "--prompt-version", "QC_PROMPT_VERSION"),
    (("retrain",), "--tolerance", "QC_RETRAIN_TOLERANCE"),
    (("broker",), "--partitions", "QC_TOPIC_PARTITIONS"),
    (("db", "upgrade"), "--url", "QC_DATABASE_URL"),
    (("db", "downgrade"), "--url", "QC_DATABASE_URL"),
    (("db", "current"), "--url", "QC_DATABASE_URL"),
    (("dashboards", "push"), "--url", "QC_GRAFANA_URL"),
    (("dashboards", "push"), "--token", "QC_GRAFANA_TOKEN"),
    (("dashboards", "push"), "--folder", "QC_GRAFANA_FOLDER"),
    (("dashboards", "push"), "--db-url", "QC_GRAFANA_DB_URL"),
]


@pytest.mark.parametrize("path, option, envvar", MIRRORED)
def test_options_that_mirror_a_setting_read_it_and_name_it_in_help(path, option, envvar):
    field = envvar.removeprefix("QC_").lower()
    assert field in Settings.model_fields  # a real setting, not a made-up name
    param = next(p for p in command(*path).params if option in p.opts)
    assert param.envvar == envvar
    res = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and envvar in res.output


def test_option_reads_its_environment_variable(monkeypatch):
    monkeypatch.setenv("QC_BATCH_SIZE", "12")
    assert parse(("bench",), [])["batch_size"] == 12
    assert parse(("bench",), ["--batch-size", "4"])["batch_size"] == 4  # the flag wins


def test_help_keeps_every_word_of_the_option_texts():
    # Help texts are rich markup: "[env QC_GRAFANA_URL]" was read as a style tag and vanished.
    res = CliRunner().invoke(app, ["dashboards", "push", "--help"], env={"COLUMNS": "200"})
    assert "Grafana base URL (http://grafana:3000)." in res.output
    assert " ." not in res.output
    for cmd in (ROOT, *_subcommands(ROOT)):
        for p in cmd.params:
            help_text = getattr(p, "help", None) or ""
            assert "[" not in help_text, f"{cmd.name} {p.opts}: brackets are rich markup"


def _subcommands(group):
    for cmd in group.commands.values():
        yield cmd
        if hasattr(cmd, "commands"):
            yield from _subcommands(cmd)


def test_one_spelling_per_option_across_commands():
    """An option that means the same thing is spelt the same everywhere (e.g. never --batch)."""
    spellings = {opt for cmd in _subcommands(ROOT) for p in cmd.params for opt in p.opts}
    assert not {"--batch", "--loglevel", "--prompts", "--out-dir", "--models-dir"} & spellings
    assert {"--batch-size", "--log-level", "--prompt-version", "--format", "--json"} <= spellings


def test_the_unused_worker_web_port_setting_is_gone(monkeypatch):
    assert "worker_web_port" not in Settings.model_fields
    monkeypatch.setenv("QC_WORKER_WEB_PORT", "6066")  # ignored like any unknown QC_ variable
    assert not hasattr(Settings(), "worker_web_port")


@pytest.mark.parametrize(
    "args, env, start",
    [
        (["worker", "--log-level", "loud"], {}, "error: invalid settings: QC_LOG_LEVEL: "),
        (
            ["db", "current"],
            {"QC_THRESHOLDS": '{"pill": [0.9, 0.1]}'},
            "error: invalid settings: QC_THRESHOLDS: 'pill': expected [warn, reject]",
        ),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_code_2(tmp_path, args, env, start):
    proc = subprocess.run(
        [sys.executable, "-c", "from qc_stream.cli.main import run; run()", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "QC_DATABASE_URL": f"sqlite:///{tmp_path / 'qc.db'}", **env},
    )
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith(start), proc.stderr
