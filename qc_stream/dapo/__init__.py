"""The DAPO model: defect-aware hybrid prompts over a frozen open_clip backbone (+ baseline models).

The model package only (as open_clip keeps its model apart from open_clip_train): training,
losses and recipes live in ``qc_stream.training``, metrics in ``qc_stream.evaluation``.

Importing this package imports torch and open_clip: CLI modules import it inside command bodies.
See docs/dapo.md.
"""

from qc_stream.dapo.backbone import Backbone, autocast, load_backbone, resolve_device
from qc_stream.dapo.baselines import (
    AgnosticBaseline,
    AgnosticConfig,
    HandcraftedBaseline,
    HandcraftedConfig,
    build_model,
)
from qc_stream.dapo.checkpoint import (
    PromptVersion,
    active_version,
    list_versions,
    load_prompt_version,
    save_prompt_version,
    set_active_version,
)
from qc_stream.dapo.model import DapoConfig, DapoModel, DapoOutput, PromptDetector

__all__ = [
    "AgnosticBaseline",
    "AgnosticConfig",
    "Backbone",
    "DapoConfig",
    "DapoModel",
    "DapoOutput",
    "HandcraftedBaseline",
    "HandcraftedConfig",
    "PromptDetector",
    "PromptVersion",
    "active_version",
    "autocast",
    "build_model",
    "list_versions",
    "load_backbone",
    "load_prompt_version",
    "resolve_device",
    "save_prompt_version",
    "set_active_version",
]
