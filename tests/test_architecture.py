"""docs/ARCHITECTURE.md matches the code: the names it writes in backticks exist, and its
"called by" / "used by" statements hold.

How a name is read (from its place in the Markdown):
- ``pkg/mod.py`` is a file from the repository root; ``mod.py`` in a section headed with a
  package (``## Streaming (`streaming/`)``) is that package's file, and the list item's code
  names after it are looked up in that module first.
- ``memestream.classify.score_paths`` is imported (longest module prefix, then attributes);
  ``compact.StreamCompactor`` under ``streaming/`` is ``streaming.compact.StreamCompactor``.
- ``Name``, ``snake_name`` and ``name(args)`` are looked up in the item's module, then in every
  module of the section's package; a snake_case name may also be an output table, one of its
  columns (``streaming.schema``) or a feature set (``memestream.features.FEATURE_SETS``). Plain words (``content``, ``gray32``) and paths with
  placeholders are not code names and are left alone.
- "`S` ... called by `A`, `B`" (or "used by"): each of A, B must resolve and its source must
  name S. A sentence that says which code calls which is checked, not trusted.

Failures name the doc line and the name, so a module moved or renamed elsewhere shows up here
with the line to fix.
"""
from __future__ import annotations

import builtins
import importlib
import inspect
import pkgutil
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
PACKAGES = ("memestream", "batch_training", "producers", "streaming", "bench")
_FILE_EXT = re.compile(r"\.(json|parquet|onnx|npz|properties|log|seq|lock|csv|png|md|ya?ml|txt|whl)$")
_CODE_IN_DIAGRAM = re.compile(r"\b(?:%s)(?:\.[A-Za-z_]\w*)+" % "|".join(PACKAGES))
_CLAIM = re.compile(r"\b(?:called|used) by\b")


@dataclass(frozen=True)
class Mention:
    line: int
    token: str
    package: str | None  # the section's package, e.g. "streaming"
    module: str | None  # the list item's current module, e.g. "streaming.query"
    item: int  # index of the list item (claims are read within one item)
    offset: int  # position of the token in its item's text


def _mentions() -> tuple[list[Mention], dict[int, str]]:
    """Backticked tokens (and dotted package names in the diagram), with the context that resolves them."""
    mentions: list[Mention] = []
    items: dict[int, str] = {}
    package = module = None
    item, in_fence = 0, False
    for no, line in enumerate(DOC.read_text().splitlines(), 1):
        if line.startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence:
            for m in _CODE_IN_DIAGRAM.finditer(line):
                mentions.append(Mention(no, m.group(0), None, None, -1, 0))
            continue
        if line.startswith("## "):
            m = re.search(r"`(\w+)/`", line)
            package = m.group(1) if m else None
            module, item = None, item + 1
            continue
        if line.startswith("- ") or not line.strip() or line.startswith("#"):
            module, item = None, item + 1
        start = len(items.get(item, ""))
        items[item] = items.get(item, "") + line + "\n"
        for m in re.finditer(r"`([^`]+)`", line):
            token = m.group(1).strip()
            mentions.append(Mention(no, token, package, module, item, start + m.start()))
            if re.fullmatch(r"\w+\.py", token) and package:
                module = f"{package}.{token[:-3]}"
    return mentions, items


def _import(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            return None
        raise


def _resolve_dotted(dotted: str) -> Any:
    """Import the longest module prefix of ``dotted`` and walk the rest as attributes; None if missing."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        mod = _import(".".join(parts[:cut]))
        if mod is None:
            continue
        obj: Any = mod
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return None
            obj = getattr(obj, attr)
        return obj
    return None


def _package_modules(package: str) -> list[ModuleType]:
    pkg = importlib.import_module(package)
    return [importlib.import_module(f"{package}.{m.name}") for m in pkgutil.iter_modules(pkg.__path__)
            if not m.name.startswith("_")]


def _named_in_code() -> set[str]:
    """Names the code defines as data: output tables and their columns, feature sets."""
    from memestream.features import FEATURE_SETS
    from streaming import schema

    tables = schema.TABLES
    return {*tables, *(c for t in tables for c in schema.column_names(t)), *FEATURE_SETS}


class Unresolved(Exception):
    pass


def _resolve(m: Mention) -> Any | None:
    """The object a mention names; None for tokens that are not code names; Unresolved when missing."""
    token = m.token
    called = re.fullmatch(r"([A-Za-z_][\w.]*)\(.*\)", token)
    name = called.group(1) if called else token
    if re.fullmatch(r"[\w/]+\.py", name):
        path = ROOT / name if "/" in name else (ROOT / m.package / name if m.package else None)
        if path is None or not path.is_file():
            raise Unresolved(f"no file {path.relative_to(ROOT) if path else name}")
        return path
    if _FILE_EXT.search(name) or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", name):
        return None
    head, *rest = name.split(".")
    sibling = m.package is not None and (ROOT / m.package / f"{head}.py").is_file()
    if head in PACKAGES or (rest and not sibling and _import(head) is not None):  # ours, or a library's
        obj = _resolve_dotted(name)
        if obj is None:
            raise Unresolved(f"{name} does not exist")
        return obj
    if rest and sibling:
        obj = _resolve_dotted(f"{m.package}.{name}")
        if obj is None:
            raise Unresolved(f"{m.package}.{name} does not exist")
        return obj
    code_like = bool(rest) or bool(called) or "_" in head.strip("_") or re.fullmatch(r"[A-Z][a-z]\w*[A-Z]?\w*", head)
    if not code_like or head.isupper() and not m.package:
        return None
    places = [importlib.import_module(m.module)] if m.module and _import(m.module) else []
    places += _package_modules(m.package) if m.package else []
    for mod in places:
        obj = _resolve_dotted(f"{mod.__name__}.{name}")
        if obj is not None:
            return obj
    if not rest and not called and name in _named_in_code():
        return "a table, column or feature set"
    if called and not rest and hasattr(builtins, name):
        return getattr(builtins, name)
    where = m.module or (f"{m.package}/" if m.package else "the code")
    raise Unresolved(f"{name} not found in {where}" + (f" or any module of {m.package}/" if m.package else ""))


def test_every_code_name_in_the_architecture_doc_exists():
    mentions, _ = _mentions()
    missing, checked = [], 0
    for m in mentions:
        try:
            checked += _resolve(m) is not None
        except Unresolved as exc:
            missing.append(f"docs/ARCHITECTURE.md:{m.line}: `{m.token}`: {exc}")
    assert checked >= 40, f"only {checked} code names recognised: is the collector still reading the doc?"
    assert not missing, "names in docs/ARCHITECTURE.md that the code does not have:\n" + "\n".join(missing)


def test_called_by_statements_of_the_architecture_doc_hold():
    """"`S` ... called by `A`, `B`": the source of A and B names S."""
    mentions, items = _mentions()
    wrong, claims = [], 0
    for item, text in items.items():
        for claim in _CLAIM.finditer(text):
            in_item = [m for m in mentions if m.item == item]
            before = [m for m in in_item if m.offset < claim.start()]
            end = re.search(r"\.\s|;|$", text[claim.end():]).start() + claim.end()
            callers = [m for m in in_item if claim.end() <= m.offset < end]
            if not before or not callers:
                wrong.append(f"docs/ARCHITECTURE.md: '{text[claim.start():end][:80]}' names no subject or caller")
                continue
            subject = before[-1]
            short = re.sub(r"\(.*", "", subject.token).split(".")[-1]
            for caller in callers:
                claims += 1
                try:
                    obj = _resolve(caller)
                except Unresolved as exc:
                    wrong.append(f"docs/ARCHITECTURE.md:{caller.line}: `{caller.token}`: {exc}")
                    continue
                source = obj.read_text() if isinstance(obj, Path) else inspect.getsource(obj)
                if not re.search(rf"\b{re.escape(short)}\b", source):
                    wrong.append(f"docs/ARCHITECTURE.md:{caller.line}: says `{caller.token}` calls `{subject.token}`, "
                                 f"but its source never names {short}")
    assert claims >= 5, "no 'called by' statements found: is the collector still reading the doc?"
    assert not wrong, "\n".join(wrong)
