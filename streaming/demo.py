"""``meme-stream --demo``: the whole system on embedded defaults, on a fresh machine.

Makes sample data, trains a model if the data folder has none, feeds a few new images
(and a few broken files) through the folder inbox or a Kafka broker started for you,
streams them, and prints what landed where and how to query it. ``streaming.cli`` builds
the :class:`StreamConfig` from the flags and starts the broker (:func:`demo_broker`);
this module never looks at the flags.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Iterator

from batch_training.config import TrainConfig
from batch_training.train import train
from memestream.modelstore import ModelStore
from memestream.sample import STYLES, sample_image_bytes, write_dataset
from producers.broker import start_broker
from producers.kafka import ImagePublisher, PublisherConfig, ensure_topic
from streaming.config import StreamConfig
from streaming.query import run_stream
from streaming.schema import PREDICTIONS, QUARANTINE, label_totals, read_table

log = logging.getLogger(__name__)

DEMO_IMAGES = 24
#: Topic of a Kafka demo when --topic is not given.
DEMO_TOPIC = "memes"


def demo_inputs() -> dict[str, bytes]:
    """New images the model has not seen, plus three broken files for the quarantine."""
    files = {}
    classes = list(STYLES)
    for i in range(DEMO_IMAGES):
        label = classes[i % len(classes)]
        fmt = "jpeg" if i % 4 else "png"
        files[f"new_{label}_{i:03d}.{'jpg' if fmt == 'jpeg' else 'png'}"] = sample_image_bytes(label, 9000 + i, fmt)
    good = files[next(iter(files))]
    files["broken_truncated.png"] = good[: len(good) // 3]
    files["not_an_image.txt"] = b"just a caption, no picture\n"
    files["empty.png"] = b""
    return files


def ensure_model(spark, sample: Path, models: Path, quiet: bool) -> None:
    """Train a first model into ``models`` (on generated images in ``sample``) unless it has one."""
    if ModelStore(models).current():
        log.info("using the existing model in %s", models)
        return
    if not sample.exists():
        write_dataset(sample, per_class=40, seed=7)
        print(f"demo: wrote sample training images to {sample}", file=sys.stderr)
    print(f"demo: training a first model into {models} (a minute or two)", file=sys.stderr)
    train(spark, TrainConfig(data=str(sample), model_dir=str(models), pca_k=20, models=("logreg", "random_forest"),
                             num_trees=40, max_depth=8, progress=not quiet))


@contextlib.contextmanager
def demo_broker() -> Iterator[str]:
    """A local Apache Kafka broker for the demo, stopped afterwards; yields its bootstrap address."""
    with start_broker() as broker:
        print(f"demo: started a local Apache Kafka broker on {broker.bootstrap}", file=sys.stderr)
        yield broker.bootstrap


def own_broker_checkpoint(cfg: StreamConfig) -> StreamConfig:
    """The stream of a broker the demo started keeps its offsets in a fresh checkpoint of its own.

    That broker and its records are gone after the demo: offsets left in the default
    ``DATA_DIR/checkpoints/kafka`` made the next stream on a real topic skip as many records
    (the README's Kafka commands classified nothing after the demo), and the next demo, on a
    new empty broker, waited forever for records it had already counted.
    """
    checkpoint = cfg.checkpoint.parent / "kafka-demo"
    shutil.rmtree(checkpoint, ignore_errors=True)
    return replace(cfg, checkpoint=checkpoint)


def feed(cfg: StreamConfig, inputs: dict[str, bytes]) -> None:
    """Put the demo inputs where the stream reads: the inbox, or the topic (created if missing)."""
    if cfg.source == "folder":
        assert cfg.inbox is not None
        cfg.inbox.mkdir(parents=True, exist_ok=True)
        for name, payload in inputs.items():
            (cfg.inbox / name).write_bytes(payload)
        print(f"demo: dropped {len(inputs)} files into {cfg.inbox}", file=sys.stderr)
        return
    assert cfg.kafka is not None
    ensure_topic(cfg.kafka.bootstrap_servers, cfg.kafka.topic, partitions=2)
    with ImagePublisher(PublisherConfig(cfg.kafka.bootstrap_servers, cfg.kafka.topic)) as pub:
        for name, payload in inputs.items():
            pub.publish(payload, {"file": name, "source": "demo"})
        pub.flush()
    print(f"demo: published {len(inputs)} messages to topic {cfg.kafka.topic}", file=sys.stderr)


def run_demo(spark, cfg: StreamConfig, sample_dir: Path) -> int:
    """Train a model into ``cfg.model_dir`` if it has none (on sample images written to
    ``sample_dir``), feed the demo inputs, stream them, and print what landed where."""
    ensure_model(spark, sample_dir, cfg.model_dir, cfg.quiet)
    inputs = demo_inputs()
    feed(cfg, inputs)
    before = label_totals(cfg.output)
    if cfg.source == "folder":
        summary = run_stream(spark, replace(cfg, available_now=True))
    else:
        summary = run_stream(spark, cfg, until=lambda s: s.rows >= len(inputs))
    preds = read_table(cfg.output, PREDICTIONS).to_pandas()
    quarantine = read_table(cfg.output, QUARANTINE).to_pandas()
    after = label_totals(cfg.output)
    print("")
    print(f"demo: classified {summary.rows} inputs in {summary.batches} batch(es); {summary.errors} quarantined")
    print("demo: totals per class:", ", ".join(f"{k} {after.get(k, 0)} (+{after.get(k, 0) - before.get(k, 0)})" for k in sorted(after)))
    if len(quarantine):
        reasons = quarantine.groupby("error_code").size().to_dict()
        print("demo: quarantined by reason:", ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())))
    print(f"demo: predictions table (Delta): {cfg.output / PREDICTIONS} ({len(preds)} rows in all)")
    print(f"demo: try: meme-query --output {cfg.output} \"SELECT label, count(*) FROM predictions GROUP BY label\"")
    return 0
