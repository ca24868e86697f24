"""Training DAPO's prompts and the baselines' learnable parts (the model lives in ``qc_stream.dapo``).

Importing this package imports torch.
"""

from qc_stream.training.train import TrainConfig, TrainHistory, evaluate_loss, train

__all__ = ["TrainConfig", "TrainHistory", "evaluate_loss", "train"]
