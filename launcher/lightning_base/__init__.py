"""Hugging Face's `lightning_base.py` programming interface, on Ray Train and Ray Tune.

A script written for transformers' examples/legacy/pytorch-lightning/lightning_base.py runs on Ray
with one changed import (docs/lightning-base.md):

    from launcher.lightning_base import BaseTransformer, add_generic_args, generic_train
"""

from launcher.lightning_base.args import add_generic_args, add_model_specific_args, to_config
from launcher.lightning_base.module import (
    MODEL_MODES,
    AutoModelForLanguageModeling,
    BaseTransformer,
    arg_to_scheduler,
    arg_to_scheduler_choices,
    arg_to_scheduler_metavar,
)
from launcher.lightning_base.train import BEST_DIR, LoggingCallback, RayTrainer, generic_train

__all__ = [
    "MODEL_MODES", "AutoModelForLanguageModeling", "BaseTransformer", "arg_to_scheduler", "arg_to_scheduler_choices",
    "arg_to_scheduler_metavar", "add_generic_args", "add_model_specific_args", "to_config", "LoggingCallback", "RayTrainer",
    "generic_train", "generic_tune", "BEST_DIR",
]


def __getattr__(name: str):
    if name == "generic_tune":  # Ray Tune loads only for a search
        from launcher.lightning_base.tune import generic_tune

        return generic_tune
    raise AttributeError(f"module 'launcher.lightning_base' has no attribute {name!r}")
