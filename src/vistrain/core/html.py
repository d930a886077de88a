"""HTML pages from Jinja2 templates (`vistrain/templates/`), every value autoescaped whatever the file name."""

from __future__ import annotations

from jinja2 import Environment, PackageLoader

_environment = Environment(loader=PackageLoader("vistrain", "templates"), autoescape=True)


def render(template: str, **context) -> str:
    """`template` (a file in vistrain/templates) rendered with `context`, every value HTML-escaped."""
    return _environment.get_template(template).render(**context)
