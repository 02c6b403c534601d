"""``meme-train --labels OUTPUT``: the labels people gave stream images join the labelled folder.

People correct the stream's labels (``meme-label``, the dashboard's review queue) into the
``labels`` table beside the stream's outputs, and each labelled image's bytes are kept in
``DATA_DIR/labelled/``. Training reads the latest label per image and:

- **adds** each labelled image the folder does not have (by sha256: the image id) as a
  training image of its label, read by the same Spark pass as the folder's images (so it is
  featurized by the same code and grouped with its near-duplicates by the grouped CV);
- **overrides** the folder's label of an image a person labelled differently (the person saw
  the model's mistake or the folder's), with a warning listing them;
- makes a **new class** of a label the folder does not have only once it has at least
  ``--min-class-images`` images; until then its images wait, and the report says how many it
  has. The manifest records what was merged (``stream_labels``).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from memestream.errors import DataError
from streaming.labels import TRAINING_PREFIX

log = logging.getLogger(__name__)

#: rel_path prefix of the stream-labelled images (never a class folder); the dashboard maps it back
PREFIX = TRAINING_PREFIX


@dataclass(frozen=True)
class StreamLabels:
    """The current label of each stream image people labelled, and where its bytes are."""

    output: str
    version: int | None
    labels: dict[str, str]  # image_id (sha256) -> label
    files: dict[str, str]  # image_id -> local file of its kept bytes
    missing_bytes: int = 0


@dataclass
class MergeSummary:
    rows: int = 0
    new_images: int = 0
    overrides: list[dict[str, str]] = field(default_factory=list)
    new_classes: dict[str, int] = field(default_factory=dict)
    waiting_classes: dict[str, int] = field(default_factory=dict)
    missing_bytes: int = 0
    duplicates_of_folder: int = 0
    #: per merged row, the label it had before the people's labels (the folder's; a stream
    #: image's own): what the current version learnt, for the champion/challenger comparison
    before: list[str] = field(default_factory=list)

    def manifest(self, version: int | None, min_class_images: int) -> dict[str, Any]:
        return {"rows": self.rows, "new_images": self.new_images, "overrides": len(self.overrides),
                "new_classes": self.new_classes, "waiting_classes": self.waiting_classes,
                "min_class_images": min_class_images, "missing_bytes": self.missing_bytes,
                "duplicates_of_folder": self.duplicates_of_folder, "labels_version": version,
                "override_examples": self.overrides[:20]}


def read_stream_labels(output: str) -> StreamLabels:
    """The ``current_labels`` of ``OUTPUT/labels`` (DuckDB over deltalake: no JVM)."""
    from streaming import duck, schema

    out = Path(output)
    if not (out / schema.LABELS / "_delta_log").is_dir():
        raise DataError(f"--labels {output}: no labels table at {out / schema.LABELS}; expected meme-stream's --output "
                        "folder after meme-label or the dashboard's review queue wrote labels")
    from deltalake import DeltaTable

    version = DeltaTable(schema.table_uri(out, schema.LABELS)).version()
    con = duck.connect(threads=1)
    try:
        duck.register_views(con, out)
        rows = con.execute(f"SELECT image_id, label, image_path FROM {schema.CURRENT_LABELS}").fetchall()
    finally:
        con.close()
    labels, files, missing = {}, {}, 0
    for image_id, label, image_path in rows:
        labels[image_id] = label
        if image_path and os.path.isfile(image_path):
            files[image_id] = image_path
        else:
            missing += 1
    log.info("stream labels: %d labelled image(s) in %s (labels version %s), %d without kept bytes",
             len(labels), out / schema.LABELS, version, missing)
    return StreamLabels(str(out), version, labels, files, missing)


def add_stream_images(spark, inputs, stream: StreamLabels):
    """The listing with one row per stream-labelled image that has bytes (its label as the
    class; rel_path ``_stream_labels/<image id><ext>``): the ingest pass reads them with the folder."""
    from pyspark.sql import Row

    from datetime import datetime

    rows = []
    for image_id, path in sorted(stream.files.items()):
        st = os.stat(path)
        rows.append(Row(Path(path).resolve().as_uri(), f"{PREFIX}/{Path(path).name}", stream.labels[image_id], st.st_size,
                        datetime.fromtimestamp(st.st_mtime)))
    if not rows:
        return inputs
    extra = spark.createDataFrame(rows, inputs.labelled.schema)
    return replace(inputs, labelled=inputs.labelled.unionByName(extra))


def _take(data, keep: list[int]):
    """The ingested rows ``keep``, every row-aligned field cut alike."""
    pick = lambda values: None if values is None else [values[i] for i in keep]  # noqa: E731
    return replace(data, path=pick(data.path), rel_path=pick(data.rel_path), label=pick(data.label),
                   sha256=pick(data.sha256), features=data.features[np.asarray(keep, dtype=np.int64)],
                   dhash=pick(data.dhash), texts=pick(data.texts), titles=pick(data.titles))


def merge(data, stream: StreamLabels, folder_classes: list[str], min_class_images: int):
    """Apply the people's labels to the ingested rows; returns (data, classes, summary)."""
    summary = MergeSummary(rows=len(stream.labels), missing_bytes=stream.missing_bytes)
    is_stream = [r.startswith(PREFIX + "/") for r in data.rel_path]
    folder_shas = {s for s, st in zip(data.sha256, is_stream) if not st}
    labels = list(data.label)
    overrides = []  # (row, from, to)
    for i, (sha, st) in enumerate(zip(data.sha256, is_stream)):
        wanted = stream.labels.get(sha)
        if not st and wanted is not None and wanted != labels[i]:
            overrides.append((i, labels[i], wanted))
    keep = [i for i, st in enumerate(is_stream) if not st or data.sha256[i] not in folder_shas]
    summary.duplicates_of_folder = sum(1 for i, st in enumerate(is_stream) if st and data.sha256[i] in folder_shas)
    # a label the folder lacks becomes a class with enough images: new ones plus overridden folder ones
    counts: dict[str, int] = {}
    for i in keep:
        if is_stream[i] and labels[i] not in folder_classes:
            counts[labels[i]] = counts.get(labels[i], 0) + 1
    for _, _, to in overrides:
        if to not in folder_classes:
            counts[to] = counts.get(to, 0) + 1
    eligible = {c for c, n in counts.items() if n >= min_class_images}
    summary.new_classes = {c: n for c, n in sorted(counts.items()) if c in eligible}
    summary.waiting_classes = {c: n for c, n in sorted(counts.items()) if c not in eligible}
    for i, before, to in overrides:
        if to in folder_classes or to in eligible:
            labels[i] = to
            summary.overrides.append({"file": data.rel_path[i], "folder": before, "label": to})
    keep = [i for i in keep if not is_stream[i] or labels[i] in folder_classes or labels[i] in eligible]
    summary.new_images = sum(1 for i in keep if is_stream[i])
    summary.before = [data.label[i] for i in keep]
    merged = _take(replace(data, label=labels), keep)
    classes = sorted(set(folder_classes) | eligible)
    if summary.overrides:
        shown = "; ".join(f"{o['file']}: {o['folder']} -> {o['label']}" for o in summary.overrides[:10])
        more = f" and {len(summary.overrides) - 10} more" if len(summary.overrides) > 10 else ""
        log.warning("stream labels override %d folder label(s): %s%s", len(summary.overrides), shown, more)
    for c, n in summary.waiting_classes.items():
        log.warning("stream label %r has %d image(s); it becomes a class at --min-class-images %d", c, n, min_class_images)
    log.info("stream labels: %d new image(s), %d override(s), new classes %s", summary.new_images,
             len(summary.overrides), summary.new_classes or "none")
    return merged, classes, summary


def with_classes(inputs, classes: list[str], data):
    """The listing's classes and per-class image counts after the merge (the report's inputs)."""
    counts = {c: 0 for c in classes}
    for label in data.label:
        counts[label] = counts.get(label, 0) + 1
    files = {c: inputs.file_counts.get(c, 0) for c in classes}
    for c in classes:
        if c not in inputs.file_counts:
            files[c] = counts[c]
    return replace(inputs, classes=list(classes), file_counts=files)
