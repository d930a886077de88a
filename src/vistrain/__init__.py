"""vistrain: a folder of labelled images in, a trained, inspected and deployable classifier out.

The pipeline's layers are its sub-packages: data -> backbones -> features -> model -> training -> analysis -> deploy,
with `cli` (the command) and `api` (the functions below) on top. See ARCHITECTURE.md.
"""

import logging
from importlib import import_module
from importlib.metadata import version

__version__ = version("vistrain")
logging.getLogger(__name__).addHandler(logging.NullHandler())  # the library is quiet: see vistrain.core.messages
__all__ = ["Model", "OptionError", "Prediction", "Predictions", "TrainOptions", "TrainResult", "evaluate", "export",
           "inspect", "load", "predict", "resume", "train"]
LIGHT = {"TrainOptions": "vistrain.training.options", "OptionError": "vistrain.core.errors"}  # without torch


def __getattr__(name: str):
    """The API (`vistrain.api`), imported when first used: `import vistrain` stays fast (torch loads on demand)."""
    if name in LIGHT:
        return getattr(import_module(LIGHT[name]), name)
    if name in __all__:
        return getattr(import_module("vistrain.api"), name)
    raise AttributeError(f"module 'vistrain' has no attribute {name!r}")
