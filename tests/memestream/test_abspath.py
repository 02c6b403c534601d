"""Paths are made absolute once, when a config is built: a later change of working directory
(the broker's JVM runs inside its data folder) changes nothing."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from memestream.abspath import absolute, absolute_fields, is_uri


def test_absolute_keeps_symlinks_uris_and_the_type(tmp_path, monkeypatch):
    (tmp_path / "models-v2").mkdir()
    (tmp_path / "models").symlink_to("models-v2")
    monkeypatch.chdir(tmp_path)
    assert absolute(Path("models")) == tmp_path / "models"  # the link itself, not its target of today
    assert absolute("models") == str(tmp_path / "models") and isinstance(absolute("models"), str)
    assert absolute(Path("/srv/x")) == Path("/srv/x")
    for uri in ("s3a://bucket/memes", "hdfs://nn:8020/memes", "file:/data/memes"):
        assert is_uri(uri) and absolute(uri) == uri
    assert absolute(None) is None and absolute("") == ""


def test_absolute_fields_in_a_frozen_dataclass(tmp_path, monkeypatch):
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Conf:
        out: Path
        name: str
        maybe: Path | None = None

        def __post_init__(self) -> None:
            absolute_fields(self)

    monkeypatch.chdir(tmp_path)
    conf = Conf(Path("out"), "not-a-path")
    assert conf == Conf(tmp_path / "out", "not-a-path") and conf.maybe is None


def _parse(module, argv: list[str]):
    return module.config_from_args(module.build_parser().parse_args(argv))


def _configs(tmp_path: Path) -> dict[str, tuple[object, dict[str, object]]]:
    """Each console script's config built from relative flags (cwd = ``tmp_path``), with the
    paths expected in it."""
    from producers import broker, folder
    from producers import kafka as publish
    from streaming import cli as stream
    from streaming import dashboard, query_cli, upkeep

    (tmp_path / "ca.pem").write_text("")
    ssl = ["--security-protocol", "SSL", "--ssl-cafile", "ca.pem", "--ssl-certfile", "c.pem", "--ssl-keyfile", "k.pem"]
    stream_cfg = _parse(stream, ["--data-dir", "d", "--model", "m", "--output", "o"])
    kafka_cfg = _parse(stream, ["--source", "kafka", "--bootstrap-servers", "h:1", "--topic", "t", *ssl])
    pub = _parse(publish, ["--bootstrap-servers", "h:1", "--topic", "t", "--posts-csv", "posts.csv", *ssl, "img.jpg"])
    t = tmp_path
    return {
        "meme-stream": (stream_cfg, {"output": t / "o", "model_dir": t / "m", "inbox": t / "d/inbox", "spool": t / "d/spool",
                                     "archive": t / "d/archive", "quarantine_dir": t / "d/quarantine",
                                     "checkpoint": t / "d/checkpoints/folder"}),
        "meme-stream (kafka security)": (kafka_cfg.kafka.security, {"ssl_cafile": str(t / "ca.pem"), "ssl_certfile": str(t / "c.pem"),
                                                                    "ssl_keyfile": str(t / "k.pem")}),
        "meme-broker": (_parse(broker, []), {"data_dir": t / "memestream-data/broker"}),
        "meme-dashboard": (_parse(dashboard, ["--output", "out", "--data-dir", "d"]), {"output": t / "out", "data_dir": t / "d"}),
        "meme-query": (_parse(query_cli, ["--output", "out", "--out", "r.csv", "SELECT 1"]), {"output": t / "out", "out": t / "r.csv"}),
        "meme-compact": (_parse(upkeep, ["--output", "out"]), {"output": str(t / "out")}),
        "meme-drop": (_parse(folder, ["--watch"]), {"inbox": t / "memestream-data/inbox", "spool": t / "memestream-data/spool"}),
        "meme-publish": (pub, {"posts_csv": t / "posts.csv"}),
        "meme-publish (security)": (pub.publisher.security, {"ssl_cafile": str(t / "ca.pem")}),
    }


def test_every_console_scripts_config_holds_absolute_paths(tmp_path, monkeypatch):
    for var in [v for v in os.environ if v.startswith("MEMESTREAM_")]:
        monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)
    configs = _configs(tmp_path)
    monkeypatch.chdir("/")  # what a later chdir would break, had the paths stayed relative
    for script, (cfg, expected) in configs.items():
        for name, want in expected.items():
            assert getattr(cfg, name) == want, f"{script}: {name} = {getattr(cfg, name)!r}, expected {want!r}"


@pytest.mark.parametrize("relative", ["sub/dir", "./x", "../up"])
def test_dashboard_default_data_dir_is_the_outputs_folder(tmp_path, monkeypatch, relative):
    from streaming import dashboard

    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    cfg = _parse(dashboard, ["--output", f"{relative}/output"])
    assert cfg.output.is_absolute() and cfg.data_dir == (tmp_path / "a" / relative).resolve()
