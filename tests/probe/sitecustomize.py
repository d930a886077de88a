"""Records every training job a test runs, in the test process and in every Python process it starts.

conftest.py installs this in the test process and puts its folder first on PYTHONPATH, so that Python loads it as
`sitecustomize` in subprocesses (`python -m vistrain train`, torchrun's workers). While $VISTRAIN_TEST_TRAININGS
names a file, each training job that starts a run (`vistrain.training.train.start_run` returns: the options and the
data were accepted, the run directory is made, features and training follow; every `train`, `demo`, `resume` and
`vistrain.train` goes through it) appends a line to that file; conftest.py fails a test that trained without the
`slow` marker. A `train` refused before it starts a run (a bad option, unusable data) is quick and is not counted.
The module is wrapped when it is first imported, never imported here: `import vistrain` stays as quick as it is.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys

TRAINING = "vistrain.training.train"
LOG = "VISTRAIN_TEST_TRAININGS"


def record() -> None:
    """One line per training job, appended by whichever process runs it."""
    with open(os.environ[LOG], "a", encoding="utf-8") as log:
        log.write(f"{os.getpid()}\n")


def wrap(module) -> None:
    """Replace `module.start_run` (which `module.train` calls) by a function that records each run it starts."""
    start_run = module.start_run
    if getattr(start_run, "records_training", False):
        return

    @functools.wraps(start_run)
    def recorded(*args, **kwargs):
        run = start_run(*args, **kwargs)
        record()
        return run

    recorded.records_training = True
    module.start_run = recorded


class TrainingFinder(importlib.abc.MetaPathFinder):
    """Finds the training module as Python would, and wraps its `start_run` once the module has run."""

    def find_spec(self, name, path, target=None):
        if name != TRAINING:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            wrap(module)

        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    """Wrap the training module now if it is loaded, else when it is."""
    if TRAINING in sys.modules:
        wrap(sys.modules[TRAINING])
    elif not any(isinstance(finder, TrainingFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, TrainingFinder())


def load_next_sitecustomize() -> None:
    """Run the sitecustomize this one hides on the path, if the environment has one (Debian's Python does)."""
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


if __name__ == "sitecustomize":
    load_next_sitecustomize()
    if os.environ.get(LOG):
        install()
