"""Import, in a background thread, modules that a later step needs, while the backbone runs.

On a small CPU, importing scikit-learn, matplotlib and torch._dynamo (which torch.optim imports on first use)
takes seconds of single-threaded Python. ONNX Runtime releases the GIL while it computes features, so importing
them meanwhile takes those seconds off the wall clock of a `train` that computes features.
"""

from __future__ import annotations

import importlib
import threading

AFTER_FEATURES = ("torch._dynamo", "vistrain.metrics", "vistrain.inspect_run")  # what `train` needs next


def preload(modules: tuple[str, ...]) -> threading.Thread:
    """Start importing `modules` in a daemon thread; an import that fails is left to the step that needs it."""
    thread = threading.Thread(target=_import_all, args=(modules,), name="vistrain-preload", daemon=True)
    thread.start()
    return thread


def _import_all(modules: tuple[str, ...]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the step that needs the module imports it again and reports the error
            pass
