"""Layering: the stream runs on the core, never on the producers (parsed, not imported)."""
from __future__ import annotations

import ast
from pathlib import Path

STREAMING = Path(__file__).resolve().parents[2] / "streaming"
#: The one exception, on purpose: ``meme-stream --demo`` is the whole system on a fresh machine,
#: so it starts a Kafka broker and publishes through the producers (and trains a model). It is
#: imported only by ``streaming.cli`` for ``--demo``, never by the stream itself.
DEMO = "demo.py"


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_no_streaming_module_imports_producers():
    files = sorted(STREAMING.rglob("*.py"))
    assert len(files) > 10
    offenders = {}
    for path in files:
        found = sorted(m for m in _imported_modules(path) if m == "producers" or m.startswith("producers."))
        if found and path.name != DEMO:
            offenders[path.relative_to(STREAMING.parent).as_posix()] = found
    assert offenders == {}, f"streaming/ must not import producers/ (move the shared piece into memestream/): {offenders}"


def test_only_the_demo_is_let_off_and_only_cli_imports_it():
    assert any(m.startswith("producers.") for m in _imported_modules(STREAMING / DEMO))  # else drop the exception
    importers = sorted(p.name for p in STREAMING.rglob("*.py") if "streaming.demo" in _imported_modules(p))
    assert importers == ["cli.py"]
