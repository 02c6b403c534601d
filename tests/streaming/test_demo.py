"""``meme-stream --demo``: what the demo leaves behind must not disturb the streams that follow it."""
from __future__ import annotations

from streaming.cli import build_parser, config_from_args, kafka_config_from_args
from streaming.demo import own_broker_checkpoint


def test_a_demo_broker_gets_a_fresh_checkpoint_of_its_own(tmp_path):
    args = build_parser().parse_args(["--demo", "--source", "kafka", "--data-dir", str(tmp_path)])
    cfg = config_from_args(args, kafka_config_from_args(args, "127.0.0.1:1", "memes"))
    stale = tmp_path / "checkpoints" / "kafka-demo" / "offsets"
    stale.mkdir(parents=True)  # offsets of the previous demo's broker, long gone
    demo = own_broker_checkpoint(cfg)
    assert demo.checkpoint == tmp_path / "checkpoints" / "kafka-demo"
    assert not demo.checkpoint.exists()
    assert cfg.checkpoint == tmp_path / "checkpoints" / "kafka"  # left for the streams on real brokers
