"""Fixtures of the chaos tier; the pipeline and the scenarios live in tests/support/chaos.py (the
soak script runs the same ones). The table of every fault injected is printed at the end."""

from __future__ import annotations

import pytest

from qc_stream.devtools.local import models_dir_without_prompts
from tests.support.chaos import ChaosRow, Pipeline, format_table

ROWS: list[ChaosRow] = []


def pytest_terminal_summary(terminalreporter):
    if ROWS:
        terminalreporter.section("chaos: faults injected against the real pipeline")
        terminalreporter.write_line(format_table(ROWS))


@pytest.fixture(autouse=True)
def untrained_models(tmp_path_factory, monkeypatch):
    """The tiny random backbone with untrained prompts: the pipeline's cost, not the model's."""
    monkeypatch.setenv(
        "QC_MODELS_DIR", str(models_dir_without_prompts(tmp_path_factory.mktemp("models")))
    )
    monkeypatch.setenv("QC_PROMPT_VERSION", "untrained")  # the explicit opt-in (else: a stop)


@pytest.fixture
def pipeline(tmp_path):
    p = Pipeline(tmp_path)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def table():
    """Record a scenario's row for the session table."""
    return ROWS.append
