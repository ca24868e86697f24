"""`python -m qc_stream ...` = `qc-stream ...` (for machines where the package is on PYTHONPATH but not installed)."""

from qc_stream.cli.main import run

run()
