"""The review queue: which predictions a person should look at first, and why.

A label is worth most where the model is least sure or sees something new, so the queue is
ordered by learning value:

1. out-of-distribution rows first (the novelty flag: "none of these" may be a new class);
2. then the smallest margin between the top two probabilities (the model's coin flips);
3. spread over near-duplicate groups: reposts of one meme (dHash within a few bits, as
   training groups them) get one place per page, so one viral image cannot fill the queue.

Only images the stream classified without error and nobody has labelled yet are queued.
Filters: predicted class, model version, OOD only, a date range (the event's UTC date).

Reads with DuckDB over the Delta tables (:mod:`streaming.duck`): no JVM.
"""
from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Callable, Sequence

from memestream.errors import ConfigError
from streaming.labels import LABEL_RE, TRAINING_PREFIX

#: How many candidates past the page are read to fill it with distinct near-duplicate groups.
POOL_FACTOR = 5
MAX_LIMIT = 100
_VERSION_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


@dataclass(frozen=True)
class ReviewFilter:
    """What the reviewer asked for; every field is checked (they arrive from a URL)."""

    label: str | None = None
    model_version: str | None = None
    ood_only: bool = False
    since: date | None = None
    until: date | None = None
    limit: int = 20

    @classmethod
    def from_query(cls, query: dict[str, list[str]]) -> "ReviewFilter":
        def one(name: str) -> str | None:
            values = query.get(name) or []
            return values[-1].strip() or None if values else None

        label, version = one("class"), one("model")
        if label is not None and not LABEL_RE.fullmatch(label):
            raise ConfigError(f"class: expected a class name (1-64 letters, digits, '_' or '-'), found {label[:80]!r}")
        if version is not None and not _VERSION_RE.fullmatch(version):
            raise ConfigError(f"model: expected a model version, found {version[:80]!r}")
        dates = {}
        for name in ("from", "to"):
            text = one(name)
            try:
                dates[name] = date.fromisoformat(text) if text else None
            except ValueError:
                raise ConfigError(f"{name}: expected a date YYYY-MM-DD, found {text[:40]!r}") from None
        try:
            limit = int(one("limit") or 20)
        except ValueError:
            raise ConfigError(f"limit: expected a whole number, found {one('limit')!r}") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise ConfigError(f"limit: expected 1-{MAX_LIMIT}, found {limit}")
        return cls(label, version, (one("ood") or "").lower() in ("1", "true", "yes", "on"),
                   dates["from"], dates["to"], limit)


def candidates_sql(flt: ReviewFilter, pool: int) -> tuple[str, list[Any]]:
    """The SQL (and parameters) of the ordered candidates: the newest prediction per image,
    classified, not labelled, filtered; ordered OOD first, then by margin."""
    where, params = ["error IS NULL", "label IS NOT NULL",
                     "image_id NOT IN (SELECT image_id FROM current_labels)"], []
    if flt.label:
        where.append("label = ?")
        params.append(flt.label)
    if flt.model_version:
        where.append("model_version = ?")
        params.append(flt.model_version)
    if flt.ood_only:
        where.append("ood")
    if flt.since:
        where.append("date >= ?")
        params.append(flt.since)
    if flt.until:
        where.append("date <= ?")
        params.append(flt.until)
    sql = f"""
        WITH latest AS (
            SELECT image_id, label, confidence, probabilities, model_version, ocr_text, novelty, ood, nearest_class,
                   source, origin, path, processing_time, date,
                   ROW_NUMBER() OVER (PARTITION BY image_id ORDER BY processing_time DESC) AS rn
            FROM predictions WHERE {' AND '.join(where)})
        SELECT image_id, label, confidence, probabilities, model_version, ocr_text, novelty, ood, nearest_class,
               source, origin, path, processing_time,
               CASE WHEN len(map_values(probabilities)) >= 2
                    THEN list_sort(map_values(probabilities), 'DESC')[1] - list_sort(map_values(probabilities), 'DESC')[2]
                    ELSE 1.0 END AS margin
        FROM latest WHERE rn = 1
        ORDER BY coalesce(ood, false) DESC, margin ASC, processing_time DESC, image_id
        LIMIT {int(pool)}"""
    return sql, params


def spread(rows: Sequence[dict[str, Any]], groups: Sequence[int], limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` rows in order, at most one per near-duplicate group; the group's
    size rides along (``reposts``) so the page can say "and 3 reposts"."""
    sizes: dict[int, int] = {}
    for g in groups:
        sizes[g] = sizes.get(g, 0) + 1
    picked, used = [], set()
    for row, g in zip(rows, groups):
        if g in used:
            continue
        used.add(g)
        picked.append({**row, "reposts": sizes[g] - 1})
        if len(picked) >= limit:
            break
    return picked


class DHashes:
    """dHash per image id, computed once from the image's bytes (an LRU of the last few thousand)."""

    def __init__(self, load: Callable[[dict[str, Any]], bytes | None], capacity: int = 4096) -> None:
        self._load = load
        self._cache: OrderedDict[str, int | None] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def get(self, row: dict[str, Any]) -> int | None:
        key = row["image_id"]
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        value = None
        data = self._load(row)
        if data:
            from memestream.decode import BadImage, decode
            from memestream.dedup import dhash

            try:
                value = dhash(decode(data, color=False, min_side=32)[0])
            except (BadImage, ValueError):
                value = None
        with self._lock:
            self._cache[key] = value
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        return value


def near_duplicate_ids(rows: Sequence[dict[str, Any]], hashes: DHashes) -> list[int]:
    """A group id per row: rows whose dHash is within the training's distance share one; a
    row without bytes to hash is its own group."""
    from memestream.dedup import near_duplicate_groups

    values = [hashes.get(r) for r in rows]
    known = [i for i, v in enumerate(values) if v is not None]
    groups = list(range(len(rows)))
    if known:
        sub = near_duplicate_groups([values[i] for i in known], [rows[i]["image_id"] for i in known])
        for i, g in zip(known, sub):
            groups[i] = known[int(g)]
    return groups


def archive_file(data_dir: Path, row: dict[str, Any]) -> Path | None:
    """Where a folder input's archived copy is (``DATA_DIR/archive/<file name>``)."""
    from urllib.parse import unquote

    if row.get("source") != "folder" or not row.get("path"):
        return None
    name = unquote(str(row["path"]).rsplit("/", 1)[-1])
    return data_dir / "archive" / name if name else None


class Explainer:
    """The training memes nearest to an image, which explain its label to a person.

    A model version keeps its novelty reference (one embedding per training image, with the
    image's file: :class:`memestream.novelty.NoveltyModel`). The image under review is
    embedded with that version's own featurizer (the shared decode and features code), and
    the closest reference rows name the training files, served as thumbnails. No JVM: the
    version is read from its folder (manifest, ONNX graph, ``novelty.npz``).
    """

    def __init__(self, model_dir: Path, capacity: int = 2) -> None:
        self.model_dir = model_dir
        self._cache: OrderedDict[str, dict[str, Any] | None] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def _load(self, version: str) -> dict[str, Any] | None:
        from memestream.features import get_feature_set
        from memestream.modelstore import ModelStore, read_manifest
        from memestream.novelty import NoveltyModel

        if not self.model_dir.is_dir() or version not in ModelStore(self.model_dir).versions():
            return None
        vdir = self.model_dir / version
        manifest = read_manifest(vdir)
        novelty = NoveltyModel.load(vdir / "models" / str(manifest.get("best")))
        if novelty is None or novelty.files is None:
            return None  # a version trained before the reference kept its files
        fs = get_feature_set(manifest["feature_set"])
        asset = vdir / "assets" / fs.asset if fs.asset else None
        labels_out = (manifest.get("config") or {}).get("labels")
        return {"fs": fs, "asset": str(asset) if asset else None, "novelty": novelty, "classes": manifest["classes"],
                "root": Path(manifest["data"]["root"]), "labelled": Path(labels_out).parent / "labelled" if labels_out else None}

    def _version(self, version: str) -> dict[str, Any] | None:
        with self._lock:
            if version in self._cache:
                self._cache.move_to_end(version)
                return self._cache[version]
            loaded = self._load(version)
            self._cache[version] = loaded
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
            return loaded

    def nearest(self, version: str, image: bytes, n: int = 3) -> list[dict[str, Any]]:
        """``[{index, label, similarity, file}]`` of the ``n`` closest training memes; [] when the
        version has no reference files or the image does not decode."""
        from memestream.features import featurize_batch

        v = self._version(version)
        if v is None:
            return []
        with self._lock:  # one embedding at a time: the ONNX session is shared
            matrix, errors = featurize_batch([image], v["fs"], asset=v["asset"])
        if errors[0] is not None:
            return []
        novelty = v["novelty"]
        return [{"index": i, "label": v["classes"][int(novelty.labels[i])], "similarity": round(sim, 4),
                 "file": novelty.files[i]} for i, sim in novelty.nearest(matrix[0], n)]

    def training_file(self, version: str, index: int) -> Path | None:
        """The training file of reference row ``index``, only if it lies inside the version's
        training folder (or the labelled images it learnt from)."""
        v = self._version(version)
        if v is None or not 0 <= index < len(v["novelty"].files):
            return None
        rel = v["novelty"].files[index]
        root, name = v["root"], rel
        if rel.startswith(TRAINING_PREFIX + "/"):
            if v["labelled"] is None:
                return None
            root, name = v["labelled"], rel[len(TRAINING_PREFIX) + 1:]
        try:
            base = root.resolve(strict=True)
            target = (base / name).resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        return target if target.is_relative_to(base) and target.is_file() else None
