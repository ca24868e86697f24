"""qc-stream: streaming visual quality control with the DAPO zero-shot defect detector."""

__version__ = "0.1.0"
