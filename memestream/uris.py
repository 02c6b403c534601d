"""Hadoop paths: ``--output``, ``--checkpoint`` and ``--model`` may be URIs (``file:``, ``hdfs://``,
``s3a://``, ``abfss://``, ``gs://``) as well as local folders.

A local path (no scheme) keeps working through :mod:`pathlib` exactly as before; a URI is
read and written through the Hadoop ``FileSystem`` of the running SparkSession's JVM (so the
same jars and ``spark.hadoop.*`` settings Spark uses apply: hadoop-aws for ``s3a://``, ...).
No Spark import at module level: the console scripts check their flags before Spark starts.

``file:`` URIs go through Hadoop's *raw* local file system: no ``.crc`` side files, so a
folder written through a ``file:`` URI stays readable as a plain local folder and back.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from memestream.abspath import is_uri
from memestream.errors import ConfigError

__all__ = [
    "is_uri", "join", "name", "parent", "scheme", "active_spark", "exists", "is_dir", "list_dir", "read_bytes",
    "read_text", "write_text", "mkdirs", "delete", "copy_to_local", "copy_from_local", "cache_root", "cache_dir", "SPARKFILES", "local_asset",
]


def scheme(location: str | os.PathLike[str]) -> str:
    """``hdfs``, ``s3a``, ``file``, ...; ``""`` for a plain local path."""
    text = os.fspath(location)
    if not is_uri(text):
        return ""
    return text.split(":", 1)[0].lower()


def join(base: str | os.PathLike[str], *parts: str) -> str:
    """``join("s3a://b/models", "v0001-x", "manifest.json")`` -> ``s3a://b/models/v0001-x/manifest.json``."""
    text = os.fspath(base)
    for part in parts:
        part = str(part).strip("/")
        if part:
            text = text.rstrip("/") + "/" + part if not text.endswith(":") else text + part
    return text


def name(location: str | os.PathLike[str]) -> str:
    """The last path segment (a version folder's name)."""
    return os.fspath(location).rstrip("/").rsplit("/", 1)[-1]


def parent(location: str | os.PathLike[str]) -> str:
    text = os.fspath(location).rstrip("/")
    head = text.rsplit("/", 1)[0]
    return head if head and not head.endswith(":") and not head.endswith(":/") else head + "/"


def active_spark():
    """The running SparkSession (its JVM holds the Hadoop FileSystem); one clear line without one."""
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    if spark is None:
        raise ConfigError("a Hadoop URI (hdfs://, s3a://, file:, ...) is read through Spark, but no SparkSession is running")
    return spark


def _fs(spark: Any, location: str) -> tuple[Any, Any]:
    """``(FileSystem, Path)`` for a URI; ``file:`` gets the raw local FS (no checksum files)."""
    spark = spark or active_spark()
    jvm = spark._jvm
    conf = spark._jsc.hadoopConfiguration()
    path = jvm.org.apache.hadoop.fs.Path(location)
    if scheme(location) == "file":
        fs = jvm.org.apache.hadoop.fs.FileSystem.getLocal(conf).getRawFileSystem()
    else:
        fs = path.getFileSystem(conf)
    return fs, path


def _local_fs(spark: Any) -> Any:
    spark = spark or active_spark()
    return spark._jvm.org.apache.hadoop.fs.FileSystem.getLocal(spark._jsc.hadoopConfiguration()).getRawFileSystem()


def exists(spark: Any, location: str) -> bool:
    fs, path = _fs(spark, location)
    return bool(fs.exists(path))


def is_dir(spark: Any, location: str) -> bool:
    fs, path = _fs(spark, location)
    return bool(fs.exists(path) and fs.getFileStatus(path).isDirectory())


def list_dir(spark: Any, location: str) -> list[tuple[str, bool]]:
    """``[(name, is_directory), ...]`` of a folder; ``[]`` when it does not exist."""
    fs, path = _fs(spark, location)
    if not fs.exists(path):
        return []
    return [(st.getPath().getName(), bool(st.isDirectory())) for st in fs.listStatus(path)]


def read_bytes(spark: Any, location: str) -> bytes:
    """A whole (small) file; FileNotFoundError when missing."""
    spark = spark or active_spark()
    fs, path = _fs(spark, location)
    if not fs.exists(path):
        raise FileNotFoundError(location)
    stream = fs.open(path)
    try:
        return bytes(spark._jvm.org.apache.hadoop.io.IOUtils.readFullyToByteArray(stream))
    finally:
        stream.close()


def read_text(spark: Any, location: str) -> str:
    return read_bytes(spark or active_spark(), location).decode("utf-8")


def write_text(spark: Any, location: str, text: str) -> None:
    """Write a small file: a hidden temporary sibling, then a rename over ``location``.

    On HDFS and local files readers see the old or the new content. Where a rename does not
    replace an existing file (HDFS) the old file is deleted first: for a moment the file is
    missing (a stream then keeps its model until the next check). Object stores (s3a) copy on
    rename; a reader sees the old or the new object.
    """
    spark = spark or active_spark()
    fs, path = _fs(spark, location)
    tmp = spark._jvm.org.apache.hadoop.fs.Path(join(parent(location), f".{name(location)}.{uuid.uuid4().hex[:8]}.tmp"))
    out = fs.create(tmp, True)
    try:
        out.write(bytearray(text.encode("utf-8")))
    finally:
        out.close()
    if not fs.rename(tmp, path):
        fs.delete(path, False)
        if not fs.rename(tmp, path):
            fs.delete(tmp, False)
            raise OSError(f"cannot write {location}: rename of the temporary file failed")


def mkdirs(spark: Any, location: str) -> None:
    fs, path = _fs(spark, location)
    fs.mkdirs(path)


def delete(spark: Any, location: str, recursive: bool = True) -> bool:
    fs, path = _fs(spark, location)
    return bool(fs.delete(path, recursive))


def copy_to_local(spark: Any, location: str, dest: str | os.PathLike[str]) -> Path:
    """Copy a file or folder tree at a URI to the local ``dest`` (replaced), atomically: into a
    hidden sibling first, then one rename. Returns ``dest``."""
    spark = spark or active_spark()
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        fs, path = _fs(spark, location)
        target = staging / "x"
        jvm = spark._jvm
        ok = jvm.org.apache.hadoop.fs.FileUtil.copy(fs, path, _local_fs(spark), jvm.org.apache.hadoop.fs.Path(target.as_uri()),
                                                    False, True, spark._jsc.hadoopConfiguration())
        if not ok:
            raise OSError(f"cannot copy {location} to {dest}")
        if dest.exists():
            shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        os.replace(target, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def copy_from_local(spark: Any, src: str | os.PathLike[str], location: str) -> None:
    """Copy a local file or folder tree to ``location`` (a URI), replacing what is there."""
    spark = spark or active_spark()
    jvm = spark._jvm
    fs, path = _fs(spark, location)
    ok = jvm.org.apache.hadoop.fs.FileUtil.copy(_local_fs(spark), jvm.org.apache.hadoop.fs.Path(Path(src).absolute().as_uri()),
                                                fs, path, False, True, spark._jsc.hadoopConfiguration())
    if not ok:
        raise OSError(f"cannot copy {src} to {location}")


#: Prefix of a file shipped to the executors with ``SparkContext.addFile`` (a featurizer's
#: ONNX graph): the rest is the shipped file's name, found with ``SparkFiles.get`` wherever
#: the code runs (driver or executor).
SPARKFILES = "sparkfiles:"


def local_asset(asset: str | os.PathLike[str]) -> str:
    """An asset path as a featurizer stores it -> a local file (``sparkfiles:NAME``: the copy
    Spark fetched into this process's SparkFiles folder)."""
    text = os.fspath(asset)
    if text.startswith(SPARKFILES):
        from pyspark import SparkFiles

        return SparkFiles.get(text[len(SPARKFILES):])
    return text


def cache_root() -> Path:
    """Where URIs' contents are cached on this machine: ``$MEMESTREAM_CACHE`` or ``~/.cache/memestream``."""
    env = os.environ.get("MEMESTREAM_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "memestream"


def cache_dir(kind: str, location: str) -> Path:
    """A local folder for one URI's cached contents: ``<cache_root>/<kind>/<name>-<hash of the URI>``."""
    digest = hashlib.sha256(location.rstrip("/").encode("utf-8")).hexdigest()[:12]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name(location))[:40] or "root"
    return cache_root() / kind / f"{safe}-{digest}"
