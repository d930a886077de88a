"""MkDocs hook: the API reference (docs/api.md) lists what `vistrain` exports, so it follows the API as it changes.

Where a page holds `<!-- api-reference -->`, the hook writes a mkdocstrings block for each name in
`vistrain.__all__` (the functions in the order api.py defines them), then for the objects they return: the classes named in the
return annotations of `vistrain/api.py`'s public functions and methods, and the public classes it defines. Both
files are read with `ast`: nothing is imported. A name mkdocstrings cannot resolve fails `mkdocs build --strict`.
"""

from __future__ import annotations

import ast
from pathlib import Path

MARKER = "<!-- api-reference -->"
PACKAGE = Path(__file__).parent / "src" / "vistrain"
FUNCTION = "::: vistrain.api.{}\n    options:\n      heading_level: 4\n"
OBJECT = FUNCTION + "      merge_init_into_class: true\n"


def exported() -> list[str]:
    """`vistrain.__all__`, as written in src/vistrain/__init__.py."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    return next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                and any(getattr(target, "id", None) == "__all__" for target in node.targets))


def annotation(node: ast.expr) -> ast.AST:
    """An annotation's expression, also when it is written as a string."""
    return ast.parse(node.value, mode="eval") if isinstance(node, ast.Constant) else node


def returned_objects(api: ast.Module, names: list[str]) -> list[str]:
    """The classes api.py defines, and those its public functions and methods say they return, that vistrain holds."""
    ours = {alias.asname or alias.name for node in api.body if isinstance(node, ast.ImportFrom)
            and (node.module or "").startswith("vistrain") for alias in node.names}
    defined = [node.name for node in api.body if isinstance(node, ast.ClassDef) and not node.name.startswith("_")]
    returned = [name.id for node in ast.walk(api) if isinstance(node, ast.FunctionDef) and node.returns is not None
                and not node.name.startswith("_") for name in ast.walk(annotation(node.returns))
                if isinstance(name, ast.Name)]
    found = [name for name in defined + returned if name in ours or name in defined]
    return [name for name in dict.fromkeys(found) if name not in names]


def reference() -> str:
    """The reference's Markdown: the functions `vistrain` exports, then the objects they take and return."""
    api = ast.parse((PACKAGE / "api.py").read_text())
    names = exported()
    functions = [node.name for node in api.body if isinstance(node, ast.FunctionDef) and node.name in names]
    objects = [name for name in names if name not in functions] + returned_objects(api, names)
    return "\n".join(["### Functions\n", *map(FUNCTION.format, functions),
                      "### The objects they take and return\n", *(OBJECT.format(name) for name in objects)])


def on_page_markdown(markdown: str, **kwargs) -> str:
    """Write the reference where the page asks for it."""
    return markdown.replace(MARKER, reference()) if MARKER in markdown else markdown
