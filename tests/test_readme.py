"""README's quick start and .ci/run must stay true to each other and to the package."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quick_start() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.strip().splitlines() if line.strip()]


def test_quick_start_is_two_commands_and_ci_runs_the_same_tests():
    commands = _quick_start()
    assert len(commands) == 2
    assert "meme-stream --demo" in commands[0] and "pip install" in commands[0]
    assert commands[1] == "python -m pytest"
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r'"\$PY" -m pytest\s*$', ci, re.M), "CI must run the README's test command"


def test_every_console_script_named_in_readme_exists():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    named = set(re.findall(r"\bmeme-[a-z]+\b", (ROOT / "README.md").read_text()))
    assert named, "README names no console scripts"
    assert named <= set(scripts), f"README names scripts that do not exist: {sorted(named - set(scripts))}"
    for name, target in scripts.items():
        module, func = target.split(":")
        mod = __import__(module, fromlist=[func])
        assert callable(getattr(mod, func)), name


def test_meme_stream_help_lists_env_fallbacks(capsys):
    import pytest

    from streaming.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "MEMESTREAM_INBOX" in out and "--demo" in out and "examples:" in out
