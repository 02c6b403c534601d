"""docker-compose.yml and Dockerfile checks that need no Docker engine.

The compose file is validated against the Compose specification (check-jsonschema's
vendored schema, so it works offline), and every app service must run a console script
declared in pyproject.toml with flags that script's parser accepts, so renaming a flag
breaks this test instead of the deployed stack.
"""
from __future__ import annotations

import argparse
import importlib
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
APP_IMAGE = "memestream:latest"
#: Commands of the app image that are not our console scripts (they come with pyspark).
EXTERNAL_COMMANDS = {"spark-class", "spark-submit"}

SCRIPTS: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
SERVICES: dict = yaml.safe_load(COMPOSE.read_text())["services"]
APP_SERVICES = sorted(name for name, svc in SERVICES.items() if svc.get("image") == APP_IMAGE or "build" in svc)


def _argv(service: dict) -> list[str]:
    entry = service.get("entrypoint") or []
    command = service.get("command") or []
    if isinstance(entry, str) or isinstance(command, str):
        pytest.fail("use the exec (list) form for entrypoint/command so flags can be checked")
    return [str(x) for x in (*entry, *command)]


def test_compose_file_matches_compose_spec():
    exe = shutil.which("check-jsonschema") or str(Path(sys.executable).with_name("check-jsonschema"))
    proc = subprocess.run(
        [exe, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_has_the_expected_services_and_volumes():
    doc = yaml.safe_load(COMPOSE.read_text())
    for name in ("kafka", "trainer", "stream", "folder-stream", "dropper", "publisher", "spark-master", "spark-worker"):
        assert name in doc["services"], name
    assert {"models", "inbox", "output", "checkpoints"} <= set(doc["volumes"])
    kafka = doc["services"]["kafka"]
    env = kafka["environment"]
    assert int(env["KAFKA_MESSAGE_MAX_BYTES"]) >= 10 * 2**20
    assert int(env["KAFKA_REPLICA_FETCH_MAX_BYTES"]) >= int(env["KAFKA_MESSAGE_MAX_BYTES"])
    assert "healthcheck" in kafka and kafka["image"].startswith("apache/kafka")
    assert "broker,controller" in env["KAFKA_PROCESS_ROLES"]
    stream = _argv(doc["services"]["stream"])
    limit = int(stream[stream.index("--max-message-bytes") + 1])
    assert limit <= int(env["KAFKA_MESSAGE_MAX_BYTES"])
    for name in ("spark-master", "spark-worker", "stream-cluster"):
        assert doc["services"][name]["profiles"] == ["cluster"]


def test_compose_kafka_is_the_release_and_settings_the_tests_run():
    """The compose broker and the local one (meme-broker, the tests) must not drift apart."""
    from memestream.jars import KAFKA_VERSION
    from producers.broker import BROKER_SETTINGS, MAX_MESSAGE_BYTES
    from producers.kafka import DEFAULT_MAX_MESSAGE_BYTES

    images = {name: svc["image"] for name, svc in SERVICES.items() if str(svc.get("image", "")).startswith("apache/kafka")}
    assert images and set(images.values()) == {f"apache/kafka:{KAFKA_VERSION}"}, images
    env = SERVICES["kafka"]["environment"]
    as_env = {"KAFKA_" + key.upper().replace(".", "_"): value for key, value in BROKER_SETTINGS.items()}
    assert {k: str(env.get(k)) for k in as_env} == as_env
    assert MAX_MESSAGE_BYTES > DEFAULT_MAX_MESSAGE_BYTES  # the publisher's largest image fits with its framing
    init = _argv(SERVICES["kafka-init"])
    assert f"max.message.bytes={MAX_MESSAGE_BYTES}" in init


def _option_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return dict(parser._option_string_actions)


@pytest.mark.parametrize("name", APP_SERVICES)
def test_service_runs_a_declared_console_script_with_known_flags(name):
    argv = _argv(SERVICES[name])
    assert argv, f"service {name} must set command/entrypoint explicitly"
    check_argv(name, argv)


def test_flag_checker_catches_unknown_flags_and_bad_choices():
    with pytest.raises(AssertionError, match="no flag --nope"):
        check_argv("fake", ["meme-query", "--output", "/o", "--nope", "1"])
    with pytest.raises(AssertionError, match="not in"):
        check_argv("fake", ["meme-query", "--output", "/o", "--format", "xml"])
    with pytest.raises(AssertionError, match="not in \\[project.scripts\\]"):
        check_argv("fake", ["meme-nonexistent", "--x"])


def check_argv(name: str, argv: list[str]) -> None:
    """Assert ``argv`` runs a declared console script with flags its parser accepts."""
    script, args = argv[0], argv[1:]
    if script in EXTERNAL_COMMANDS:
        assert args and args[0].startswith("org.apache.spark.deploy."), argv
        return
    assert script in SCRIPTS, f"service {name} runs {script!r}, which is not in [project.scripts]: {sorted(SCRIPTS)}"
    module_name = SCRIPTS[script].split(":")[0]
    module = importlib.import_module(module_name)  # a missing module fails the test: the stack would not start
    parser = module.build_parser()
    actions = _option_actions(parser)
    i = 0
    while i < len(args):
        token = args[i]
        if token.startswith("--"):
            flag, _, inline = token.partition("=")
            assert flag in actions, f"service {name}: {script} has no flag {flag} (known: {sorted(actions)})"
            action = actions[flag]
            if action.nargs == 0:
                i += 1
                continue
            value = inline or args[i + 1]
            if action.choices is not None:
                assert value in action.choices, f"service {name}: {flag} {value!r} not in {list(action.choices)}"
            if action.type is not None and callable(action.type):
                action.type(value)  # raises on e.g. a non-numeric --trigger
            i += 1 if inline else 2
        else:
            i += 1


def test_dockerfile_copies_every_package_and_dockerignore_keeps_them():
    text = (ROOT / "Dockerfile").read_text()
    assert "openjdk-17-jre-headless" in text and text.splitlines()[0].startswith("#")
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    for pattern in packages:
        pkg = pattern.rstrip("*")
        if (ROOT / pkg).is_dir():
            assert f"COPY {pkg} ./{pkg}" in text, f"Dockerfile does not copy package {pkg}"
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert not ignored & {p.rstrip("*") for p in packages}
    assert {".git", "tests"} <= ignored
