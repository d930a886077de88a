"""The layout is the pipeline: each layer imports only the layers below it, and no module grows past a screenful
of screens (see ARCHITECTURE.md)."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

import vistrain

PACKAGE = Path(vistrain.__file__).parent
LAYERS = ["core", "data", "backbones", "features", "model", "training", "analysis", "deploy", "api", "cli"]


def layer_of(module: str) -> str | None:
    """The layer of a dotted vistrain module name (`vistrain.features.extract` -> features)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "vistrain" and parts[1] in LAYERS else None


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every vistrain import in a file, including those inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, module) for line, module in found if module.startswith("vistrain")]


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE or p.stem == "api")


def module_name(path: Path) -> str:
    """The dotted name of a module file (a package's __init__.py: the package)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """{module: the vistrain modules it imports}, for every module file (packages' __init__.py included).
    Imports inside functions and under TYPE_CHECKING count: deferring an import hides a circle from Python, not
    from a reader, who still cannot understand (or test) either module without the other; the circle between
    deploy/export.py and deploy/quantized.py was one such. `from a.b import c` names the module a.b.c when there
    is one, else a.b. Importing a.b.c also runs a.b's __init__.py; that is not counted, or every package whose
    __init__.py imports its own modules would be a circle."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        found = set()
        for _, module in imports(path):
            while module not in files:
                module = module.rpartition(".")[0]
            found.add(module)
        graph[name] = found - {name}
    return graph


def test_no_module_imports_itself_through_others():
    try:
        tuple(TopologicalSorter(import_graph()).static_order())
    except CycleError as error:
        raise AssertionError("import circle: " + " -> ".join(error.args[1])) from None


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module `start` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for module in graph[todo.pop()] - seen:
            seen.add(module)
            todo.append(module)
    return seen


@pytest.mark.parametrize("module, unwanted", [
    ("vistrain.training.train", "vistrain.data.check"),  # the leak warning without the check command's module
    ("vistrain.model.run_dir", "vistrain.features.int8"),  # a run's precision, named without the quantiser
    ("vistrain.cli.main", "vistrain.features.int8"),  # --precision's choices, likewise
])
def test_shared_names_live_below_the_commands_that_use_them(module: str, unwanted: str):
    assert unwanted not in reachable(import_graph(), module)


def test_every_module_lives_in_a_layer():
    assert sorted({p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in modules()}) == sorted(LAYERS)


def test_lower_layers_never_import_higher_ones():
    wrong = []
    for path in modules():
        own = LAYERS.index(path.relative_to(PACKAGE).parts[0].removesuffix(".py"))
        for line, module in imports(path):
            layer = layer_of(module)
            if layer is not None and LAYERS.index(layer) > own:
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_no_two_modules_share_a_name():
    """One meaning per word: `files.py` in two layers meant two things."""
    names = [p.name for p in modules() if p.name != "__init__.py"]
    assert not {name for name in names if names.count(name) > 1}


def test_an_api_function_name_means_that_api_function():
    """`vistrain.evaluate` scores a run; a function of that name elsewhere in the library (the epoch loop's scoring of
    logits was one) would be another meaning for the word. The CLI's commands share the names."""
    meanings = {}
    for path in modules():
        if path.parts[-2] != "cli" and path.name != "api.py":
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.FunctionDef) and node.name in vistrain.__all__:
                    meanings.setdefault(node.name, []).append(str(path.relative_to(PACKAGE)))
    assert all(len(places) == 1 for places in meanings.values()), meanings


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in modules() if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_the_command_line_help_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys; from vistrain.cli import main; assert 'torch' not in sys.modules, 'torch imported'"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0
