"""The formats `vistrain export` writes, each described once: a new format is one entry in FORMATS, its default
names in the run directory's schema (`vistrain.model.run_dir.EXPORTS`), and one module with a
`write(predictor, run, path, int8)` and a `read_metadata(path)`.

Every format holds the whole model (uint8 RGB pixels in, the task's outputs out) and the run's metadata, a map of
strings (`export.metadata`). Converters for the phone and edge formats come with optional extras
(`pip install 'vistrain[tflite]'`), so the base install does not carry them.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from vistrain.core.errors import OptionError
from vistrain.model.run_dir import EXPORTS


class MissingExtra(OptionError):
    """A format's converter is not installed; the message gives the pip command."""


@dataclass(frozen=True)
class ExportFormat:
    """`write` and `read` name, as "module:function", the functions that write it (`write(predictor, run, path,
    int8)`) and read its metadata back (`read_metadata(path)`; formats with an int8 version); `folder`: whether it
    is a folder rather than a file; `extra` and `needs`: the vistrain extra that installs its converter and the
    modules it provides. Its default files or folders in the run, and so whether it has an int8 version, are the run
    directory's (`vistrain.model.run_dir.EXPORTS`: model.onnx, model-int8.tflite, model_openvino/...)."""

    name: str
    write: str
    read: str | None
    folder: bool = False
    extra: str | None = None
    needs: tuple[str, ...] = ()

    @property
    def int8(self) -> bool:
        return len(EXPORTS[self.name]) > 1

    def default_path(self, run: Path, int8: bool) -> Path:
        return run / EXPORTS[self.name][int8]

    def require(self) -> None:
        """A MissingExtra naming the pip command when the converter's modules are not installed."""
        missing = [name for name in self.needs if importlib.util.find_spec(name) is None]
        if missing:
            raise MissingExtra(f"{{output_format}} {self.name} needs {', '.join(missing)}: "
                               f"pip install 'vistrain[{self.extra}]'")

    def writer(self) -> Callable[..., None]:
        return _function(self.write)

    def read_metadata(self, path: Path) -> dict[str, str]:
        return _function(self.read)(path)


def _function(name: str) -> Callable:
    module, function = name.split(":")
    return getattr(importlib.import_module(module), function)


def _optional(name: str, needs: tuple[str, ...], folder: bool = False) -> ExportFormat:
    """A format whose converter comes with the extra of its name, written and read by the module of its name in
    vistrain.deploy (`write`, `read_metadata`)."""
    module = f"vistrain.deploy.{name}"
    return ExportFormat(name, f"{module}:write", f"{module}:read_metadata", folder, name, needs)


FORMATS = {f.name: f for f in (
    ExportFormat("onnx", "vistrain.deploy.export:write_onnx", "vistrain.deploy.export:read_onnx_metadata"),
    ExportFormat("torchscript", "vistrain.deploy.export:write_torchscript", None),
    _optional("tflite", ("litert_torch", "ai_edge_litert")),
    _optional("coreml", ("coremltools",), folder=True),
    _optional("openvino", ("openvino",), folder=True),
)}


def export_format(name: str, int8: bool) -> ExportFormat:
    """The format called `name`, checked to exist, to have an int8 version if `int8`, and to be installed."""
    if name not in FORMATS:
        raise ValueError(f"unknown format {name!r}; choose one of {', '.join(FORMATS)}")
    chosen = FORMATS[name]
    if int8 and not chosen.int8:
        raise OptionError(f"{name} has no int8 version: {{int8}} needs one of "
                         f"{', '.join(f.name for f in FORMATS.values() if f.int8)}")
    chosen.require()
    return chosen


def export_size(path: Path) -> int:
    """Bytes of an exported file, or of every file in an exported folder."""
    path = Path(path)
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
