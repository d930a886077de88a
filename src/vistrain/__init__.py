"""vistrain: a folder of labelled images in, a trained, inspected and deployable classifier out.

The pipeline's layers are its sub-packages: data -> backbones -> features -> model -> training -> analysis -> deploy,
with `cli` (the command) and `api` (the functions below) on top. See ARCHITECTURE.md.
"""

from importlib import import_module
from importlib.metadata import version

__version__ = version("vistrain")
__all__ = ["TrainOptions", "evaluate", "export", "inspect", "predict", "resume", "train"]


def __getattr__(name: str):
    """The API functions, imported when first used: `import vistrain` stays fast (torch loads on demand)."""
    if name == "TrainOptions":
        return import_module("vistrain.training.options").TrainOptions
    if name in __all__:
        return getattr(import_module("vistrain.api"), name)
    raise AttributeError(f"module 'vistrain' has no attribute {name!r}")
