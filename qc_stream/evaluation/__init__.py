"""The quality benchmark: DAPO vs hand-crafted vs object-agnostic prompts under distribution shift.

Data and protocol come from ``qc_stream.synth`` (``split.json``); metrics from ``qc_stream.evaluation.metrics``.
Importing ``qc_stream.evaluation.runner`` imports torch; the CLI does so inside the command body.
"""
