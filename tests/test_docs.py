"""The docs are tests: every shell block of README.md and docs/*.md runs exactly as written.

``python -m pytest -m slow tests/test_docs.py`` runs each ``bash``/``sh``/``console`` block as a
user following the page top to bottom would: the blocks of one page in order, in one fresh
temporary folder, with the project's console scripts on PATH. Test ids are ``FILE:LINE`` of the
opening fence; selecting one block (``-k 'README.md:91'``) runs the blocks above it first.

Substituted, and nothing else (``tests/doc_blocks.py`` has the details and the conventions):
- the ports the docs write (9092, 29092, 8050, 8060, 7077, 8080) become free ports, one per
  documented port for the whole run, so the docs keep the familiar numbers (``meme-broker``
  and ``meme-dashboard`` get theirs through MEMESTREAM_BROKER_PORT / MEMESTREAM_DASHBOARD_PORT
  when a block relies on their default port);
- ``../shared/datasets/`` (the real memes beside the repository) becomes its absolute path;
  such a block is skipped when the data set is absent.

A block the tests cannot run says why in a visible italic line before it
(``*Not run by the docs tests: <reason>*``) and is reported skipped with that reason (``-ra``).
Commands that keep running (a comment saying "Ctrl-C", or a trailing ``&``) are started, waited
for until ready, and stopped at the end of their page, where their exit is checked.

The fast tests here keep the Markdown honest without running it: every fence has a language,
Python blocks compile and their imports resolve, the flags of blocks that are not run parse, and
the repository files the docs cite exist.

Why not pytest-examples or phmdoctest: both install and run under pytest 9, but both collect
only Python fences (pytest-examples' ``find_examples`` keeps ``py``/``python``/``pycon`` blocks;
phmdoctest turns Python blocks into a test file, with setup in invisible HTML comments), so
neither runs a shell block, starts a server or follows a page in one folder. The Python blocks
in docs/kafka.md are fragments with names the reader fills in (a broker, the image bytes), so
running them would need hidden setup; they are compiled and their imports resolved instead.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import re
import shlex
import tomllib

import pytest

from tests.conftest import SHARED_DATA
from tests.doc_blocks import (
    DOCS,
    DOC_PORTS,
    ROOT,
    SHARED_DATASETS,
    Block,
    BlockFailed,
    DocRun,
    all_blocks,
    free_port,
    split_commands,
)

BLOCKS = all_blocks()
SHELL_BLOCKS = [b for b in BLOCKS if b.is_shell]
SCRIPTS: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def _skip_reason(block: Block) -> str | None:
    if block.skip_reason:
        return block.skip_reason
    if SHARED_DATASETS in block.text and not SHARED_DATA.is_dir():
        return f"needs the shared data set, not found at {SHARED_DATA}"
    return None


def _last_run_block() -> dict[str, str]:
    last: dict[str, str] = {}
    for b in SHELL_BLOCKS:
        if _skip_reason(b) is None:
            last[b.doc] = b.id
    return last


LAST_RUN = _last_run_block()


@pytest.fixture(scope="module")
def doc_runs(tmp_path_factory):
    """One :class:`DocRun` per page, made when its first block runs; leftovers stopped at the end."""
    ports = {p: free_port() for p in DOC_PORTS}
    runs: dict[str, DocRun] = {}

    def get(doc: str) -> DocRun:
        if doc not in runs:
            folder = tmp_path_factory.mktemp(re.sub(r"\W", "-", doc))
            runs[doc] = DocRun(doc, folder, ports, SHARED_DATA.parent)
        return runs[doc]

    yield get
    for run in runs.values():
        run.stop(check=False)


@pytest.mark.slow
@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=lambda b: b.id)
def test_shell_block_runs_as_written(block: Block, doc_runs):
    reason = _skip_reason(block)
    if reason:
        pytest.skip(f"{block.id}: {reason}")
    run = doc_runs(block.doc)
    failure = None
    try:
        for earlier in SHELL_BLOCKS:  # a page is followed in order: blocks above this one not yet run go first
            if earlier is block:
                break
            if earlier.doc == block.doc and earlier.id not in run.attempted and _skip_reason(earlier) is None:
                run.run(earlier)
    except BlockFailed as exc:
        failure = f"an earlier block of the page failed, so this one cannot run as documented:\n{exc}"
    if failure is None:
        try:
            run.run(block)
        except BlockFailed as exc:
            failure = str(exc)
    if LAST_RUN.get(block.doc) == block.id:  # the end of the page: stop what it left running, check it
        try:
            run.stop(check=True)
        except BlockFailed as exc:
            failure = f"{failure}\n\n{exc}" if failure else str(exc)
    if failure:
        pytest.fail(failure, pytrace=False)


def test_every_fence_names_its_language():
    """An unlabelled fence could hide commands from the tests: ``text`` marks what is not code."""
    unlabelled = [b.id for b in BLOCKS if not b.lang]
    assert not unlabelled, f"fences without a language (use bash, python or text): {unlabelled}"


def test_docs_have_shell_blocks_and_skips_are_few():
    assert len(SHELL_BLOCKS) >= 10
    skipped = [b.id for b in SHELL_BLOCKS if b.skip_reason]
    assert len(skipped) <= len(SHELL_BLOCKS) // 3, f"most shell blocks should run, not run: {skipped}"


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "python"], ids=lambda b: b.id)
def test_python_block_compiles_and_its_imports_resolve(block: Block):
    """Python blocks use names a reader fills in (a broker, image bytes); their syntax and imports must hold."""
    tree = ast.parse(block.text, filename=block.id)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
        elif isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module or "")
            missing = [a.name for a in node.names if not hasattr(module, a.name)]
            assert not missing, f"{block.id}: {node.module} has no {missing}"


class _ParseError(Exception):
    pass


def _parser_for(argv: list[str]) -> tuple[argparse.ArgumentParser, list[str]] | None:
    """The argparse parser of a console script (``meme-x``) or ``python -m module``, and its arguments."""
    if argv and argv[0].startswith("meme-"):
        assert argv[0] in SCRIPTS, f"no console script {argv[0]} (pyproject.toml has {sorted(SCRIPTS)})"
        module = SCRIPTS[argv[0]].split(":")[0]
        args = argv[1:]
    elif argv[:2] == ["python", "-m"] and len(argv) > 2:
        module, args = argv[2], argv[3:]
        if importlib.util.find_spec(module) is None:
            raise AssertionError(f"no module {module}")
        if importlib.util.find_spec(module).submodule_search_locations:
            module += ".__main__"
    else:
        return None
    mod = importlib.import_module(module)
    build = getattr(mod, "build_parser", None)
    return (build(), args) if build else None


NOT_RUN = [b for b in SHELL_BLOCKS if b.skip_reason]


@pytest.mark.parametrize("block", NOT_RUN, ids=lambda b: b.id)
def test_commands_of_blocks_not_run_exist_and_their_flags_parse(block: Block):
    """What the tests cannot run is at least checked against the code: the program and its flags.

    ``...`` stands for flags left out; a missing required flag is fine, an unknown flag or a bad
    value is not.
    """
    checked, problems = 0, []
    for cmd in split_commands(block):
        code = cmd.code.rstrip("&").replace("\\\n", " ")  # a backslash-newline only continues the line
        for part in re.split(r"&&|\|\||;|\|", code):
            try:
                argv = [a for a in shlex.split(part) if a != "..."]
            except ValueError:
                continue
            while argv and re.match(r"^\w+=", argv[0]):
                argv = argv[1:]
            found = _parser_for(argv)
            if found is None:
                continue
            parser, args = found

            def error(message: str, parser=parser) -> None:
                raise _ParseError(message)

            parser.error = error  # type: ignore[method-assign]
            try:
                parser.parse_args(args)
            except _ParseError as exc:
                if "the following arguments are required" not in str(exc):
                    problems.append(f"`{part.strip()}`: {exc}")
            checked += 1
    assert not problems, f"{block.id}: " + "\n".join(problems)
    if not checked:
        pytest.skip("no command of this project in the block (its programs are not ours)")


_REPO_PATH = re.compile(r"^(?:batch_training|bench|docs|memestream|producers|streaming|tests|\.ci)/[\w./-]*$")


def test_repository_files_the_docs_cite_are_in_the_repository():
    """A cited file (`tests/test_cluster.py`, `docs/results/x.json`) must be tracked: a gitignored or
    deleted one sends the reader nowhere. Paths with placeholders (`<time>`, `*`) and ignored
    folders (`bench/results/`) describe where outputs go, and are not checked."""
    import subprocess

    tracked = set(subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split())
    if not tracked:
        pytest.skip("not a git checkout")
    missing = []
    for doc in DOCS:
        for no, line in enumerate((ROOT / doc).read_text().splitlines(), 1):
            for token in re.findall(r"`([^`\s]+)`", line):
                if not _REPO_PATH.match(token):
                    continue
                inside = token.rstrip("/") + "/"
                found = token in tracked or any(t.startswith(inside) for t in tracked)
                if not found and (token.endswith("/") or "." not in token.rsplit("/", 1)[-1]):
                    # an output folder the repository ignores (`bench/results/`) is fine
                    found = subprocess.run(["git", "check-ignore", "-q", inside + "x"], cwd=ROOT).returncode == 0
                if not found:
                    missing.append(f"{doc}:{no}: `{token}`")
    assert not missing, "files cited by the docs that are not in the repository:\n" + "\n".join(missing)


def test_commands_are_split_as_bash_reads_them():
    text = ("meme-broker --port 9092 &   # kill %1 stops it\n"
            "meme-query --output out \"SELECT 1 # not a comment\n  FROM t\"\n"
            "# a comment line\n"
            "meme-train --data d \\\n    --model-dir m   # two lines\n"
            "meme-dashboard --output o     # http://127.0.0.1:8050; Ctrl-C stops\n"
            "a && b\n")
    cmds = split_commands(Block("x.md", 1, "bash", text))
    assert [c.code for c in cmds] == [
        "meme-broker --port 9092 &", 'meme-query --output out "SELECT 1 # not a comment\n  FROM t"', "",
        "meme-train --data d \\\n    --model-dir m", "meme-dashboard --output o", "a && b"]
    assert [(c.background, c.keeps_running) for c in cmds if c.code] == [
        (True, False), (False, False), (False, False), (False, True), (False, False)]
    console = split_commands(Block("x.md", 1, "console", "$ meme-sample --out d\nwrote 120 images\n$ ls d\n"))
    assert [c.code for c in console] == ["meme-sample --out d", "ls d"]


def test_documented_ports_become_free_ports_and_shared_data_its_absolute_path(tmp_path):
    run = DocRun("x.md", tmp_path, {}, tmp_path / "datasets")
    out = run.substitute("meme-broker --port 9092 & meme-publish --bootstrap-servers 127.0.0.1:9092 "
                         "../shared/datasets/doom-crossing --per-class 19092 --heap 8050m")
    port = run.ports[9092]
    assert out == (f"meme-broker --port {port} & meme-publish --bootstrap-servers 127.0.0.1:{port} "
                   f"{tmp_path}/datasets/doom-crossing --per-class 19092 --heap 8050m")


def test_a_traceback_counts_only_when_it_runs_through_the_project(tmp_path):
    from tests.doc_blocks import _our_traceback

    pyspark = ('Traceback (most recent call last):\n  File "/x/site-packages/pyspark/daemon.py", line 95, in worker\n'
               "BrokenPipeError: [Errno 32] Broken pipe\n")
    ours = (f'Traceback (most recent call last):\n  File "{ROOT}/streaming/query.py", line 9, in run\n    stop()\n'
            "KeyError: 'x'\n")
    assert _our_traceback(pyspark) == ""
    assert "KeyError" in _our_traceback("log line\n" + pyspark + ours)
