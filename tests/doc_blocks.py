"""The fenced code blocks of README.md and docs/*.md, and a runner that types them as a user would.

What the Markdown promises, and how it is kept (``tests/test_docs.py``):

- Every fence names its language: ``bash`` (or ``sh``, ``shell``, ``console``) for commands,
  ``python`` for Python, ``text`` for diagrams, listings and printed output. A command block
  therefore cannot slip past the tests by having no language.
- A shell block that cannot run here is preceded by a line the reader sees, in italics:
  ``*Not run by the docs tests: <reason>*``. It is reported as skipped with that reason.
- A command that keeps running says so in its comment with "Ctrl-C" (``meme-dashboard ...  #
  ...; Ctrl-C stops``); a command ending in ``&`` runs in the background. Either one is started
  in its own process group (as if in a second terminal), waited for until it is ready (a port it
  names accepts connections, or it printed "ready", "started" or "Ctrl-C to stop"), and the next
  commands run beside it. At the end of the page it is stopped as a user would: Ctrl-C (SIGINT)
  for a foreground command, ``kill %1`` (SIGTERM) for a background one; it must not have failed
  nor printed a traceback through the project's code.
- The blocks of one page run in order, in one fresh temporary folder, each in a new ``bash``
  with ``set -eo pipefail``; exported variables and the working directory carry over from one
  block to the next, as in one terminal.
- Only these are substituted: the ports in :data:`DOC_PORTS` by free ports (one free port per
  documented port, the same in every block; a documented port that is a program's default
  reaches it through its environment fallback, :data:`PORT_ENV`), and ``../shared/datasets/``
  (the real memes beside the repository) by its absolute path; a block naming it is skipped
  when the data set is absent.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The documents whose blocks are tests.
DOCS = ("README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")))
SHELL_LANGS = frozenset({"bash", "sh", "shell", "console"})
SKIP_NOTE = re.compile(r"^\*Not run by the docs tests: (?P<reason>.+)\*$")
#: Ports the docs write literally; each is replaced by a free port.
DOC_PORTS = (9092, 29092, 8050, 8060, 7077, 8080)
_PORT_RE = re.compile(r"(?<![\w.])(" + "|".join(map(str, DOC_PORTS)) + r")(?!\w)")
SHARED_DATASETS = "../shared/datasets/"
_READY = re.compile(r"\b(ready|started)\b|Ctrl-C to stop", re.I)
#: Documented ports that are also a program's default, moved through its environment fallback.
PORT_ENV = {9092: "MEMESTREAM_BROKER_PORT", 8050: "MEMESTREAM_DASHBOARD_PORT"}
READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 90.0
#: Environment variables of the test run a user would not have set (the conftest sets some).
_NOT_A_USERS = re.compile(r"^MEMESTREAM_(?!JAR_CACHE$)")


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it is, its language, its text and the note before it."""

    doc: str
    line: int  # line of the opening fence (1-based)
    lang: str
    text: str
    skip_reason: str | None = None

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def is_shell(self) -> bool:
        return self.lang in SHELL_LANGS


def read_blocks(doc: str, root: Path = ROOT) -> list[Block]:
    """Every fenced block of ``doc`` (a path relative to ``root``), with the visible skip note before it."""
    lines = (root / doc).read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = re.match(r"^ {0,3}(`{3,}|~{3,})\s*([\w+-]*)", lines[i])
        if not m:
            i += 1
            continue
        fence, lang, start = m.group(1), m.group(2).lower(), i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        blocks.append(Block(doc, start + 1, lang, "\n".join(body) + "\n", _skip_note(lines, start)))
        i += 1
    return blocks


def _skip_note(lines: list[str], fence: int) -> str | None:
    """The reason of a ``*Not run by the docs tests: ...*`` line just before the fence (blank lines between)."""
    j = fence - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    m = SKIP_NOTE.match(lines[j].strip()) if j >= 0 else None
    return m.group("reason").strip() if m else None


def all_blocks(root: Path = ROOT) -> list[Block]:
    return [b for doc in DOCS for b in read_blocks(doc, root)]


@dataclass(frozen=True)
class Command:
    """One logical shell command: its text as written (continuation lines joined), code and comment."""

    text: str
    code: str
    comment: str

    @property
    def background(self) -> bool:
        return re.search(r"(?<![&|])&\s*$", self.code) is not None

    @property
    def keeps_running(self) -> bool:
        """A foreground command its comment says runs until Ctrl-C."""
        return "ctrl-c" in self.comment.lower()

    @property
    def long_running(self) -> bool:
        return bool(self.code) and (self.background or self.keeps_running)


def split_commands(block: Block) -> list[Command]:
    """Logical commands of a shell block: a line continues after a trailing backslash or an open quote.

    ``console`` blocks keep only the lines after a ``$ `` prompt (and their continuations).
    """
    text = block.text
    if block.lang == "console":
        kept, cont = [], False
        for line in text.splitlines():
            if line.startswith("$ ") or cont:
                kept.append(line[2:] if line.startswith("$ ") and not cont else line)
                cont = line.endswith("\\")
            else:
                kept.append("")
        text = "\n".join(kept) + "\n"
    commands: list[Command] = []
    code: list[str] = []
    comment: list[str] = []
    quote = None
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            code.append(ch)
            if ch == "\\" and quote == '"' and i + 1 < len(text):
                code.append(text[i + 1])
                i += 1
            elif ch == quote:
                quote = None
        elif ch == "\\" and i + 1 < len(text):
            code.append(ch + text[i + 1])
            i += 1
        elif ch in "'\"":
            quote = ch
            code.append(ch)
        elif ch == "#" and (not code or code[-1][-1:].isspace()):
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            comment.append(text[i + 1:end].strip())
            i = end - 1
        elif ch == "\n":
            if "".join(code).strip() or comment:
                commands.append(Command("".join(code) + (f"  # {' '.join(comment)}" if comment else ""),
                                        "".join(code).strip(), " ".join(comment)))
            code, comment = [], []
        else:
            code.append(ch)
        i += 1
    if "".join(code).strip():
        commands.append(Command("".join(code), "".join(code).strip(), " ".join(comment)))
    return commands


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


class BlockFailed(AssertionError):
    """A documented command failed: the message names the block, the command and its output."""


@dataclass
class Process:
    """A long-running command started by a page: how to stop it and where its output is."""

    block: Block
    command: str
    proc: subprocess.Popen
    log: Path
    stop_signal: int


@dataclass
class DocRun:
    """One page followed top to bottom in one folder: the shell state and the processes it left running."""

    doc: str
    workdir: Path
    ports: dict[int, int]
    shared_datasets: Path
    env: dict[str, str] = field(default_factory=dict, init=False)
    processes: list[Process] = field(default_factory=list)
    attempted: set[str] = field(default_factory=set)
    _n: int = 0

    def __post_init__(self) -> None:
        self.cwd = self.workdir / "home"
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.state = self.workdir / "harness"
        self.state.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not _NOT_A_USERS.match(k)}
        bindir = str(Path(sys.executable).parent)  # the venv's console scripts, python and pip
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
        env.setdefault("PYSPARK_PYTHON", sys.executable)
        env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        env.pop("PYTEST_CURRENT_TEST", None)
        for port, var in PORT_ENV.items():  # `meme-dashboard` without --port serves on the free port too
            env[var] = str(self.ports.setdefault(port, free_port()))
        self.env = env

    def substitute(self, text: str) -> str:
        """Free ports for the documented ones; the real data set's absolute path for ``../shared/datasets/``."""
        text = _PORT_RE.sub(lambda m: str(self.ports.setdefault(int(m.group(1)), free_port())), text)
        return text.replace(SHARED_DATASETS, str(self.shared_datasets) + "/")

    def run(self, block: Block) -> None:
        """Run ``block``'s commands; long-running ones are started, waited for and left running."""
        self.attempted.add(block.id)
        chunk: list[str] = []
        for cmd in split_commands(block):
            if not cmd.long_running:
                chunk.append(cmd.text)
                continue
            if chunk:
                self._run_chunk(block, chunk)
                chunk = []
            self._start(block, cmd)
        if chunk:
            self._run_chunk(block, chunk)

    def _next_log(self, block: Block) -> Path:
        self._n += 1
        return self.state / f"{self._n:02d}-line{block.line}.log"

    def _run_chunk(self, block: Block, lines: list[str]) -> None:
        script = self.substitute("\n".join(lines))
        log = self._next_log(block)
        env_file, pwd_file = self.state / "env", self.state / "pwd"
        body = (f"set -eo pipefail\nset -x\n{script}\n{{ set +x; }} 2>/dev/null\n"
                f"env -0 > {shlex.quote(str(env_file))}\npwd > {shlex.quote(str(pwd_file))}\n")
        path = log.with_suffix(".sh")
        path.write_text(body)
        with open(log, "wb") as out:
            proc = subprocess.Popen(["bash", str(path)], cwd=self.cwd, env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                rc = proc.wait(timeout=840)
            except subprocess.TimeoutExpired:
                _killpg(proc, signal.SIGKILL)
                proc.wait()
                raise BlockFailed(f"{block.id}: still running after 840 s:\n{script}\n--- output:\n{_tail(log)}")
        if rc != 0:
            raise BlockFailed(f"{block.id}: exit code {rc} from:\n{script}\n--- output (last lines; the failing "
                              f"command is the last '+' line):\n{_tail(log)}")
        self.env = dict(item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item)
        self.cwd = Path(pwd_file.read_text().strip())

    def _start(self, block: Block, cmd: Command) -> None:
        text = self.substitute(cmd.text)
        code = self.substitute(cmd.code)
        if cmd.background:
            code = re.sub(r"&\s*$", "", code).rstrip()
        log = self._next_log(block)
        out = open(log, "wb")
        proc = subprocess.Popen(["bash", "-c", code], cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        started = Process(block, text, proc, log, signal.SIGTERM if cmd.background else signal.SIGINT)
        self.processes.append(started)
        ports = [self.ports[p] for p in DOC_PORTS if p in self.ports and str(self.ports[p]) in text]
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            rc = proc.poll()
            if rc is not None:
                self.processes.remove(started)  # ended: nothing to stop at the end of the page
                if rc != 0:
                    raise BlockFailed(f"{block.id}: `{text.strip()}` exited with code {rc} before it was ready:\n"
                                      f"{_tail(log)}")
                return  # it finished by itself
            if any(_port_open(p) for p in ports) or _READY.search(log.read_text(errors="replace")):
                return
            if time.monotonic() > deadline:
                raise BlockFailed(f"{block.id}: `{text.strip()}` not ready after {READY_TIMEOUT_S:.0f} s "
                                  f"(no port of {ports} open, no line saying it is ready):\n{_tail(log)}")
            time.sleep(0.2)

    def stop(self, check: bool = True) -> None:
        """Stop the page's long-running commands, newest first; with ``check``, fail if one had failed."""
        problems = []
        for p in reversed(self.processes):
            rc = p.proc.poll()
            alive = rc is None
            if alive:
                _killpg(p.proc, p.stop_signal)
                try:
                    rc = p.proc.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    _killpg(p.proc, signal.SIGKILL)
                    p.proc.wait()
                    problems.append(f"{p.block.id}: `{p.command.strip()}` did not stop within {STOP_TIMEOUT_S:.0f} s "
                                    f"of {p.stop_signal.name}:\n{_tail(p.log)}")
                    continue
            _killpg(p.proc, signal.SIGKILL)  # anything it left behind in its group
            stopped_codes = {0, 128 + p.stop_signal, -p.stop_signal} if alive else {0}
            text = p.log.read_text(errors="replace")
            if rc not in stopped_codes:
                how = f"stopped by {p.stop_signal.name}" if alive else "ended by itself"
                problems.append(f"{p.block.id}: `{p.command.strip()}` {how} with exit code {rc}:\n{_tail(p.log)}")
            elif _our_traceback(text):
                problems.append(f"{p.block.id}: `{p.command.strip()}` printed a traceback through the project's "
                                f"code:\n{_our_traceback(text)}")
        self.processes.clear()
        if check and problems:
            raise BlockFailed("\n\n".join(problems))


def _our_traceback(text: str) -> str:
    """The first Python traceback in ``text`` that passes through this repository's code, or ''.

    (PySpark's worker daemon prints BrokenPipeError tracebacks of its own when Spark drops idle
    workers; those are not the project's to fix.)"""
    for m in re.finditer(r"Traceback \(most recent call last\):\n(?:[ \t].*\n)+.*", text):
        files = re.findall(r'File "([^"]+)"', m.group(0))
        if any(f.startswith(f"{ROOT}/") and "site-packages" not in f for f in files):
            return m.group(0)
    return ""


def _killpg(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
