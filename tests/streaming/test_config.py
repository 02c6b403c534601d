"""StreamConfig and KafkaSourceConfig refuse bad settings when built, naming the flag."""
from __future__ import annotations

from pathlib import Path

import pytest

from memestream.errors import ConfigError
from memestream.kafka import KafkaSecurity
from streaming.config import KafkaSourceConfig, StreamConfig


def _cfg(**kw) -> StreamConfig:
    base = dict(source="folder", output=Path("o"), checkpoint=Path("c"), model_dir=Path("m"), spool=Path("s"),
                archive=Path("a"))
    return StreamConfig(**{**base, **kw})


def test_config_maps_to_the_spark_source_and_masks_password():
    cfg = KafkaSourceConfig("h:1", "t", "latest", 5, 1234, security=KafkaSecurity("SASL_SSL", "PLAIN", "u", "pw-xyz"))
    opts = cfg.spark_options()
    assert opts["subscribe"] == "t" and opts["startingOffsets"] == "latest" and opts["maxOffsetsPerTrigger"] == "5"
    assert opts["kafka.security.protocol"] == "SASL_SSL" and "pw-xyz" in opts["kafka.sasl.jaas.config"]
    assert "pw-xyz" not in repr(cfg)


@pytest.mark.parametrize("bad, message", [
    (dict(source="ftp"), "--source must be one of folder, kafka, found 'ftp'"),
    (dict(scoring="gpu"), "--scoring must be one of auto, python, spark"),
    (dict(processed="shred"), "--processed must be one of archive, delete, keep"),
    (dict(folder_impl="nfs"), "--folder-source must be one of spool, binaryfile, found 'nfs'"),
    (dict(source="kafka"), "needs a KafkaSourceConfig"),
    (dict(spool=None), "needs a spool folder"),
    (dict(archive=None), "--processed archive needs an archive folder"),
    (dict(trigger_seconds=0), "--trigger expects a positive number"),
    (dict(retention_days=0), "--retention-days expects a positive"),
    (dict(compact_every_s=0), "--compact-every-minutes expects a positive number"),
])
def test_bad_stream_settings_fail_when_built(bad, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        _cfg(**bad)


def test_valid_settings_and_checkpoint_identity():
    assert _cfg(archive=None, processed="keep").identity()["spool"] == str(Path("s").resolve())
    kafka = _cfg(source="kafka", spool=None, kafka=KafkaSourceConfig("h:1", "memes"))
    assert kafka.identity() == {"source": "kafka", "output": str(Path("o").resolve()), "topic": "memes"}


def test_output_upkeep_flags_and_their_env_fallbacks(monkeypatch):
    from streaming.cli import build_parser, config_from_args

    cfg = config_from_args(build_parser().parse_args([]))
    assert (cfg.compact_every_batches, cfg.compact_every_s, cfg.retention_days) == (50, 600.0, None)
    assert cfg.compacts
    args = ["--compact-every-batches", "5", "--compact-every-minutes", "0.5", "--retention-days", "30"]
    cfg = config_from_args(build_parser().parse_args(args))
    assert (cfg.compact_every_batches, cfg.compact_every_s, cfg.retention_days) == (5, 30.0, 30)
    monkeypatch.setenv("MEMESTREAM_NO_COMPACT", "1")
    monkeypatch.setenv("MEMESTREAM_RETENTION_DAYS", "7")
    cfg = config_from_args(build_parser().parse_args([]))
    assert not cfg.compacts and cfg.retention_days == 7


def test_default_trigger_is_short_and_the_cli_uses_the_config_default(monkeypatch):
    """The trigger bounds light-load latency from below (a file landing while the stream idles
    waits for the next trigger); the CLI and StreamConfig share one default."""
    from streaming.cli import build_parser
    from streaming.config import DEFAULT_TRIGGER_S

    assert DEFAULT_TRIGGER_S <= 0.2
    assert _cfg().trigger_seconds == DEFAULT_TRIGGER_S
    monkeypatch.delenv("MEMESTREAM_TRIGGER", raising=False)
    assert build_parser().parse_args([]).trigger == DEFAULT_TRIGGER_S
    monkeypatch.setenv("MEMESTREAM_TRIGGER", "0.5")  # still overridable
    assert build_parser().parse_args([]).trigger == 0.5


def test_poison_pill_flags_and_their_env_fallbacks(monkeypatch):
    from memestream.isolation import DEFAULT_TIME_CAP_S, DEFAULT_WORKER_MEMORY
    from streaming.cli import build_parser, config_from_args

    cfg = config_from_args(build_parser().parse_args([]))
    assert (cfg.time_cap_s, cfg.worker_memory, cfg.max_isolations) == (DEFAULT_TIME_CAP_S, DEFAULT_WORKER_MEMORY, 10)
    cfg = config_from_args(build_parser().parse_args(["--time-cap", "0", "--worker-memory", "0", "--max-isolations", "3"]))
    assert (cfg.time_cap_s, cfg.worker_memory, cfg.max_isolations) == (None, None, 3)  # 0: off
    monkeypatch.setenv("MEMESTREAM_WORKER_MEMORY", "512m")
    monkeypatch.setenv("MEMESTREAM_TIME_CAP", "2.5")
    cfg = config_from_args(build_parser().parse_args([]))
    assert (cfg.time_cap_s, cfg.worker_memory) == (2.5, 512 << 20)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--worker-memory", "lots"])
    with pytest.raises(ConfigError, match="--time-cap expects a positive number"):
        config_from_args(build_parser().parse_args(["--time-cap", "-1"]))
