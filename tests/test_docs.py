"""The documentation: the site builds with warnings as errors (every link, heading anchor, include and API reference
resolves), the README's links lead to files and headings that exist, and the API reference covers the whole API."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import vistrain

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built as CI builds it: `mkdocs build --strict` (warnings are errors)."""
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def page_of(site: Path, markdown: str) -> Path:
    """The built HTML of docs/<page>.md (`use_directory_urls`: docs/data.md -> data/index.html)."""
    stem = Path(markdown).stem
    return site / "index.html" if stem == "index" else site / stem / "index.html"


def test_every_page_builds(site: Path):
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert pages and all(page_of(site, page).is_file() for page in pages)
    architecture = page_of(site, "architecture.md").read_text()
    assert "Where a new thing goes" in architecture and "Libraries, and why" in architecture  # the includes


def test_readme_links_lead_to_files_and_headings_that_exist(site: Path):
    wrong = []
    for target in re.findall(r"\]\(([^)\s]+)\)", (ROOT / "README.md").read_text()):
        if "://" in target:
            continue
        path, _, anchor = target.partition("#")
        if not (ROOT / path).exists():
            wrong.append(f"{target}: no such file")
        elif anchor and f'id="{anchor}"' not in page_of(site, path).read_text():
            wrong.append(f"{target}: no such heading")
    assert not wrong, wrong


def test_the_api_reference_documents_every_public_name(site: Path):
    """mkdocs_hooks.py writes the reference from `vistrain.__all__`: each name, and what train returns, has its entry."""
    public = vistrain.__all__
    documented = set(re.findall(r'id="vistrain\.api\.(\w+)"', page_of(site, "api.md").read_text()))
    assert public and set(public) <= documented, sorted(set(public) - documented)
    assert "TrainResult" in documented  # an object a function returns
