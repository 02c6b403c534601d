"""Child process for the ``scale`` scenario: run the training ingest path once, print JSON.

A fresh process per input size gives a clean peak-memory reading (a JVM never hands
heap back, so sizes measured in one process would hide growth behind earlier peaks).
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest_worker", description=__doc__)
    parser.add_argument("--data", required=True, help="folder of images (listed recursively)")
    parser.add_argument("--feature-set", default="colortex")
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--driver-memory", default="2g")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    from pyspark.sql import functions as F

    from memestream.featurizer import ImageFeaturizer
    from memestream.load import list_image_files
    from memestream.spark import build_spark

    spark = build_spark("memestream-bench-ingest", master=args.master, driver_memory=args.driver_memory)
    spark.range(4).count()
    startup = time.perf_counter() - t0
    t1 = time.perf_counter()
    listed = list_image_files(spark, args.data)
    feats = ImageFeaturizer(inputCol="content", featureSet=args.feature_set).transform_paths(listed, "path")
    row = feats.agg(F.count("*").alias("n"), F.count("error").alias("bad"),
                    F.count(F.when(F.col("error").rlike("^(oversized|empty|read_error):"), 1)).alias("load_bad")).first()
    job = time.perf_counter() - t1
    parts = listed.rdd.getNumPartitions()
    print(json.dumps({"images": row["n"], "bad": row["bad"], "load_bad": row["load_bad"], "job_s": round(job, 3),
                      "startup_s": round(startup, 3), "partitions": parts}), flush=True)
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
