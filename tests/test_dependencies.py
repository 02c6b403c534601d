"""Every module the code, the tests and the benchmarks import is declared in pyproject.toml.

A clean virtual environment (``pip install -e '.[dev]'``, what .ci/run builds) has only the
declared distributions; one that happens to be installed on a developer's machine, or comes
along with another package, would pass here and fail there. So each top-level import must be
the standard library, this project, or a distribution named in ``dependencies`` or the ``dev``
extra, found through the installed metadata (``cv2`` -> opencv-python-headless, ``yaml`` -> PyYAML).
"""
from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The project's own top-level packages (installed or not: bench/ and tests/ stay in the repository).
OWN = ("memestream", "batch_training", "producers", "streaming", "bench", "tests")


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(pyproject: Path = ROOT / "pyproject.toml") -> set[str]:
    """Distributions in ``dependencies`` and the ``dev`` extra (names only, canonical)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    specs = project["dependencies"] + project.get("optional-dependencies", {}).get("dev", [])
    return {canonical(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec.strip()).group(0)) for spec in specs}


def imported(files: list[Path]) -> dict[str, set[str]]:
    """Top-level module name -> the files importing it (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path))
    return found


def undeclared(files: list[Path], known: set[str]) -> dict[str, str]:
    """Imported top-level modules that are neither stdlib, nor the project's, nor from a declared
    distribution -> why, with the files importing them."""
    owners = packages_distributions()
    problems = {}
    for module, where in sorted(imported(files).items()):
        if module in sys.stdlib_module_names or module in OWN or module == "__future__":
            continue
        dists = owners.get(module, [])
        if not any(canonical(d) in known for d in dists):
            what = f"from {', '.join(sorted(set(dists)))}" if dists else "not installed"
            problems[module] = f"{what}; imported by {', '.join(sorted(where)[:3])}"
    return problems


def _sources() -> list[Path]:
    return sorted(p for pkg in OWN for p in (ROOT / pkg).rglob("*.py"))


def test_every_import_is_declared_in_pyproject():
    files = _sources()
    assert len(files) > 100 and any(p.parts[-2] == "bench" for p in files)
    problems = undeclared(files, declared())
    assert not problems, "declare these in pyproject.toml (dependencies, or the dev extra for tests and bench):\n" + \
        "\n".join(f"  {m}: {why}" for m, why in problems.items())


def test_the_check_reports_what_is_missing(tmp_path):
    code = tmp_path / "code.py"
    code.write_text("import os, json\nfrom yaml import safe_load\nimport numpy.linalg\nfrom memestream import cli\n"
                    "from . import sibling\nimport surely_no_such_module_here\n")
    problems = undeclared([code], {"numpy"})
    assert set(problems) == {"yaml", "surely_no_such_module_here"}
    assert problems["yaml"].startswith("from PyYAML") and problems["surely_no_such_module_here"].startswith("not installed")
    assert {"pyspark", "pyyaml", "opencv-python-headless", "cryptography"} <= declared()
