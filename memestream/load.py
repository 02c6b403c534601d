"""Read image files named in a DataFrame, in the Python workers, with a size cap.

Spark's ``binaryFile`` reader fails the whole job on a file above its length limit; the
folder source therefore lists files with Spark (path, length, modificationTime) and this
transform reads their bytes, so an oversized or vanished file becomes an error row
instead of a failed batch. Training and streaming share it.
"""
from __future__ import annotations

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from memestream.decode import DEFAULT_MAX_BYTES
from memestream.inputs import EMPTY_FILE_MARKER, local_path, read_capped  # noqa: F401 - re-exported


def _reader(max_bytes: int):
    def run(paths: pa.Array) -> pa.Array:
        contents: list[bytes | None] = []
        errors: list[str | None] = []
        for uri in paths.to_pylist():
            data, err = read_capped(local_path(uri), max_bytes)
            contents.append(data)
            errors.append(str(err) if err is not None else None)
        return pa.StructArray.from_arrays(
            [pa.array(contents, type=pa.binary()), pa.array(errors, type=pa.string())], names=["content", "error"]
        )

    return run


def read_files(
    df: DataFrame,
    path_col: str = "path",
    content_col: str = "content",
    error_col: str = "load_error",
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> DataFrame:
    """Add ``content_col`` (bytes or null) and ``error_col`` (null or reason) from ``path_col``."""
    udf = F.arrow_udf(_reader(max_bytes), "content binary, error string").asNondeterministic()
    tmp = "__memestream_read"
    staged = df.withColumn(tmp, udf(F.col(path_col)))
    return staged.select(
        *[F.col(c) for c in df.columns],
        F.col(f"{tmp}.content").alias(content_col),
        F.col(f"{tmp}.error").alias(error_col),
    )


def list_image_files(spark, root: str, recursive: bool = True) -> DataFrame:
    """List files under ``root`` with Spark (no content read): path, length, modificationTime.

    Hidden files and folders (leading ``.`` or ``_``) are skipped by Spark's file index.
    """
    reader = spark.read.format("binaryFile")
    if recursive:
        reader = reader.option("recursiveFileLookup", "true")
    return reader.load(root).select("path", "length", "modificationTime")
