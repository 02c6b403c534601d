"""``meme-stream --demo``: the whole system on embedded defaults, on a fresh machine.

Makes sample data, trains a model if the data folder has none, feeds a few new images
(and a few broken files) through the folder inbox or a Kafka broker started for you,
streams them, and prints what landed where and how to query it.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

from memestream.modelstore import ModelStore
from memestream.sample import STYLES, sample_image_bytes, write_dataset

log = logging.getLogger(__name__)

DEMO_IMAGES = 24


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


def ensure_model(spark, data: Path, models: Path, quiet: bool) -> None:
    if ModelStore(models).current():
        log.info("using the existing model in %s", models)
        return
    from batch_training.train import TrainConfig, train

    sample = data / "sample"
    if not sample.exists():
        write_dataset(sample, per_class=60, seed=7)
        print(f"demo: wrote sample training images to {sample}", file=sys.stderr)
    print(f"demo: training a first model into {models} (a minute or two)", file=sys.stderr)
    train(spark, TrainConfig(data=str(sample), model_dir=str(models), pca_k=20, models=("logreg", "random_forest"),
                             num_trees=40, max_depth=8, progress=not quiet))


def run_demo(args: argparse.Namespace) -> int:
    from memestream.spark import build_spark
    from streaming.cli import config_from_args
    from streaming.query import run_stream
    from streaming.sinks import OutputTables, read_table

    data = Path(args.data_dir)
    args.model = args.model or str(data / "models")
    spark = build_spark("meme-stream-demo", master=args.master, driver_memory=args.driver_memory,
                        driver_java_options=args.driver_java_options)
    ensure_model(spark, data, Path(args.model), args.quiet)
    inputs = demo_inputs()
    broker = None
    try:
        if args.source == "folder":
            cfg = replace(config_from_args(args), available_now=True)
            assert cfg.inbox is not None
            cfg.inbox.mkdir(parents=True, exist_ok=True)
            for name, payload in inputs.items():
                (cfg.inbox / name).write_bytes(payload)
            print(f"demo: dropped {len(inputs)} files into {cfg.inbox}", file=sys.stderr)
            before = OutputTables(cfg.output).label_totals()
            summary = run_stream(spark, cfg)
        else:
            from producers.broker import start_broker
            from producers.kafka import ImagePublisher, PublisherConfig, ensure_topic

            if not getattr(args, "bootstrap_servers", None):
                broker = start_broker()
                args.bootstrap_servers = broker.bootstrap
                print(f"demo: started a local Apache Kafka broker on {broker.bootstrap}", file=sys.stderr)
            args.topic = getattr(args, "topic", None) or "memes"
            cfg = config_from_args(args)
            ensure_topic(args.bootstrap_servers, args.topic, partitions=2)
            with ImagePublisher(PublisherConfig(args.bootstrap_servers, args.topic)) as pub:
                for name, payload in inputs.items():
                    pub.publish(payload, {"file": name, "source": "demo"})
                pub.flush()
            print(f"demo: published {len(inputs)} messages to topic {args.topic}", file=sys.stderr)
            before = OutputTables(cfg.output).label_totals()
            summary = run_stream(spark, cfg, until=lambda s: s.rows >= len(inputs))
    finally:
        if broker is not None:
            broker.close()
    preds = read_table(cfg.output, "predictions").to_pandas()
    quarantine = read_table(cfg.output, "quarantine").to_pandas()
    after = OutputTables(cfg.output).label_totals()
    print("")
    print(f"demo: classified {summary.rows} inputs in {summary.batches} batch(es); {summary.errors} quarantined")
    print("demo: totals per class:", ", ".join(f"{k} {after.get(k, 0)} (+{after.get(k, 0) - before.get(k, 0)})" for k in sorted(after)))
    if len(quarantine):
        reasons = quarantine.groupby("error_code").size().to_dict()
        print("demo: quarantined by reason:", ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())))
    print(f"demo: predictions table: {cfg.output / 'predictions'} ({len(preds)} rows in all)")
    print(f"demo: try: meme-query --output {cfg.output} \"SELECT label, count(*) FROM predictions GROUP BY label\"")
    return 0
