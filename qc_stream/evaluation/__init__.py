"""The quality benchmark: DAPO vs hand-crafted vs object-agnostic prompts under distribution shift.

``dataset_eval`` scores and measures any dataset (``qc_stream.datasets``); ``benchmark`` runs it on the
synthetic held-out products (``qc_stream.synth``, ``split.json``) and adds seen/novel subsets, goals,
regions and the ablation; metrics come from ``metrics``. Both import torch; the CLI imports them
inside the command body.
"""
