"""Resolve Java jars (Apache Kafka, Spark's Kafka connector) from Maven Central once, then cache them.

Why: the development broker is a real Apache Kafka, and Spark's own Kafka source is a jar; neither
ships with pip. Maven (``mvn``) resolves an artifact with all its runtime dependencies into a
cache folder on first use (one progress line); later runs use the cache and need no network.

Cache: ``$MEMESTREAM_JAR_CACHE`` or ``~/.cache/memestream``; one sub-folder per jar set
(``kafka-4.1.1/``), written to a temporary folder and renamed when complete, so an interrupted
download is never mistaken for a cached one. Maven's own repository (``~/.m2``) is used as usual.
Spark's Kafka source falls back to an older connector of the same line when PySpark's own version
is not served (resolve_spark_kafka; for PySpark 4.3.0 the 4.2.0 connector).
"""
from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from memestream.errors import EnvironmentProblem

log = logging.getLogger(__name__)

#: The Apache Kafka release the development broker runs; docker-compose.yml's apache/kafka image
#: has the same version (tests/test_compose.py checks it).
KAFKA_VERSION = "4.1.1"
SCALA_BINARY = "2.13"
#: Kafka 4.x logs through SLF4J 1.7 to log4j2; the binding is not a dependency of kafka_2.13.
LOG4J_VERSION = "2.24.3"
CACHE_ENV = "MEMESTREAM_JAR_CACHE"
COMPLETE_MARKER = ".complete"


class JarsUnavailable(EnvironmentProblem):
    """The jars are not cached and cannot be fetched (no Maven, no network, not served)."""


class ArtifactNotServed(JarsUnavailable):
    """Maven Central answered that an artifact does not exist (as opposed to being unreachable)."""


@dataclass(frozen=True)
class JarSet:
    """A named set of Maven artifacts ("group:artifact:version") resolved with their runtime dependencies."""

    name: str
    artifacts: tuple[str, ...]
    description: str


def kafka_broker_jars(version: str = KAFKA_VERSION) -> JarSet:
    """Apache Kafka's broker (core, KRaft, storage tool) plus a log4j2 binding for its logs."""
    return JarSet(
        name=f"kafka-{version}",
        artifacts=(f"org.apache.kafka:kafka_{SCALA_BINARY}:{version}",
                   f"org.apache.logging.log4j:log4j-slf4j-impl:{LOG4J_VERSION}"),
        description=f"Apache Kafka {version}",
    )


#: Connector releases to fall back on when the installed PySpark's own is not served, newest first.
#: Kept short and explicit: only releases checked to run under the PySpark this project pins
#: (4.2.0 under 4.3.0: docs/kafka.md). A fallback is used only for the same major version and
#: a major.minor no newer than the installed PySpark's.
SPARK_KAFKA_FALLBACKS = ("4.2.0",)
NOT_SERVED_RECHECK_S = 24 * 3600  # like Maven's daily update policy: ask again about a missing version once a day


def _installed_spark_version() -> str:
    import pyspark

    return pyspark.__version__


def spark_kafka_jars(spark_version: str | None = None) -> JarSet:
    """Spark's Kafka source (spark-sql-kafka-0-10) at the installed PySpark's version (or the one given)."""
    if spark_version is None:
        spark_version = _installed_spark_version()
    return JarSet(
        name=f"spark-sql-kafka-{spark_version}",
        artifacts=(f"org.apache.spark:spark-sql-kafka-0-10_{SCALA_BINARY}:{spark_version}",),
        description=f"Spark's Kafka source {spark_version}",
    )


def cache_root() -> Path:
    """Where resolved jar sets live (``$MEMESTREAM_JAR_CACHE`` or ``~/.cache/memestream``)."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "memestream"


def cached_jars(jar_set: JarSet, root: Path | None = None) -> list[Path] | None:
    """The jars of a completely resolved set, or None when it is not cached."""
    folder = (root or cache_root()) / jar_set.name
    if not (folder / COMPLETE_MARKER).is_file():
        return None
    jars = sorted(folder.glob("*.jar"))
    return jars or None


def _pom(jar_set: JarSet) -> str:
    deps = []
    for coord in jar_set.artifacts:
        group, artifact, version = coord.split(":")
        deps.append(f"<dependency><groupId>{escape(group)}</groupId><artifactId>{escape(artifact)}</artifactId>"
                    f"<version>{escape(version)}</version></dependency>")
    return ('<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
            "<groupId>memestream.local</groupId><artifactId>jar-resolver</artifactId><version>1</version>"
            "<packaging>pom</packaging><dependencies>" + "".join(deps) + "</dependencies></project>\n")


def _not_served(output: str) -> re.Match | None:
    return (re.search(r"Could not find artifact (\S+)", output)
            or re.search(r"(\S+) was not found in \S+ during a previous attempt", output))


def _explain_failure(jar_set: JarSet, output: str, folder: Path) -> str:
    """One line from Maven's output: not served, no network, or the first error."""
    missing = _not_served(output)
    if missing:
        return (f"Maven Central does not serve {missing.group(1)} (needed for {jar_set.description}); "
                "nothing was cached")
    if re.search(r"UnknownHost|Could not transfer|Connection refused|Network is unreachable|timed out|"
                 r"Could not resolve host|No route to host|offline", output, re.IGNORECASE):
        return (f"{jar_set.description} is not cached in {folder} and Maven Central cannot be reached "
                "(no network?); run once with network access, or set "
                f"{CACHE_ENV} to a folder that holds them")
    errors = [ln.strip() for ln in output.splitlines() if ln.startswith("[ERROR]") and ln.strip() != "[ERROR]"]
    detail = errors[0][len("[ERROR]"):].strip() if errors else (output.strip().splitlines() or ["no output"])[-1]
    return f"could not resolve {jar_set.description} with Maven: {detail[:300]}"


def resolve(jar_set: JarSet, root: Path | None = None, quiet: bool = False) -> list[Path]:
    """The set's jars, resolving them with Maven into the cache the first time.

    Raises JarsUnavailable (one line) when Maven is missing, the network is down, or Maven
    Central does not serve an artifact. Safe to call from several processes at once (file lock).
    """
    root = root or cache_root()
    jars = cached_jars(jar_set, root)
    if jars:
        return jars
    folder = root / jar_set.name
    mvn = shutil.which("mvn")
    if mvn is None:
        raise JarsUnavailable(
            f"{jar_set.description} is not cached in {folder} and Maven ('mvn') is not installed to fetch it "
            "(on Debian/Ubuntu: apt-get install maven)"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise JarsUnavailable(f"jar cache folder {root} is not writable: {exc.strerror or exc}") from None
    with open(root / f".{jar_set.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be resolving the same set
        jars = cached_jars(jar_set, root)
        if jars:
            return jars
        if not quiet:
            print(f"fetching {jar_set.description} jars from Maven Central into {folder} (once)...",
                  file=sys.stderr, flush=True)
        work = Path(tempfile.mkdtemp(prefix=f".{jar_set.name}-", dir=root))
        try:
            (work / "pom.xml").write_text(_pom(jar_set))
            out = work / "jars"
            # Runtime scope: the artifacts and their compile/runtime dependencies only; test-scoped
            # ones (e.g. spark-token-provider-kafka's "tests" jar) are never resolved.
            proc = subprocess.run(
                [mvn, "-B", "-f", str(work / "pom.xml"), "dependency:copy-dependencies",
                 f"-DoutputDirectory={out}", "-DincludeScope=runtime"],
                cwd=work, capture_output=True, text=True, timeout=900,
            )
            if proc.returncode != 0 or not any(out.glob("*.jar")):
                output = proc.stdout + proc.stderr
                error = ArtifactNotServed if _not_served(output) else JarsUnavailable
                raise error(_explain_failure(jar_set, output, folder))
            (out / COMPLETE_MARKER).write_text("\n".join(jar_set.artifacts) + "\n")
            if folder.exists():
                shutil.rmtree(folder)
            out.rename(folder)
        except subprocess.TimeoutExpired:
            raise JarsUnavailable(f"Maven took over 15 minutes resolving {jar_set.description}; gave up") from None
        finally:
            shutil.rmtree(work, ignore_errors=True)
    jars = cached_jars(jar_set, root) or []
    if not quiet:
        print(f"cached {len(jars)} jars for {jar_set.description} in {folder}", file=sys.stderr, flush=True)
    log.info("resolved %s: %d jars in %s", jar_set.description, len(jars), folder)
    return jars


def java_binary() -> str:
    """The ``java`` to run (``$JAVA_HOME/bin/java`` or PATH); one clear line when there is none."""
    home = os.environ.get("JAVA_HOME")
    if home and os.access(os.path.join(home, "bin", "java"), os.X_OK):
        return os.path.join(home, "bin", "java")
    found = shutil.which("java")
    if found is None:
        raise EnvironmentProblem(
            "the Kafka broker needs a Java 17+ runtime, but no 'java' was found on PATH and JAVA_HOME is not set "
            "(on Debian/Ubuntu: apt-get install openjdk-17-jre-headless)"
        )
    return found


def _major_minor(version: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", version)
    if not m:
        raise JarsUnavailable(f"cannot read a major.minor version from PySpark version {version!r}")
    return int(m.group(1)), int(m.group(2))


def spark_kafka_candidates(spark_version: str | None = None) -> list[str]:
    """Connector versions to try, in order: the installed PySpark's own, then the allowed fallbacks."""
    spark_version = spark_version or _installed_spark_version()
    major, minor = _major_minor(spark_version)
    out = [spark_version]
    for v in SPARK_KAFKA_FALLBACKS:
        fmajor, fminor = _major_minor(v)
        if v not in out and fmajor == major and fminor <= minor:
            out.append(v)
    return out


def _not_served_marker(root: Path, jar_set: JarSet) -> Path:
    return root / f".{jar_set.name}.not-served"


def resolve_spark_kafka(spark_version: str | None = None, root: Path | None = None,
                        quiet: bool = False) -> tuple[str, list[Path]]:
    """Spark's Kafka source jars: (connector version, jars), falling back when PySpark's own is not served.

    Why: a PySpark release can reach PyPI before (or without) its connector reaching Maven Central;
    an older connector of the same line then runs under it. Order: the exact version (cached or
    fetched), then each fallback in SPARK_KAFKA_FALLBACKS (cached or fetched), with a WARNING naming
    both versions. Maven's "not served" answer is remembered for a day (a dotfile in the cache), so
    each start does not ask again. Offline, a cached fallback is used. Raises JarsUnavailable (one
    line, every candidate's reason) when none can be had.
    """
    root = root or cache_root()
    exact = spark_version or _installed_spark_version()
    reasons: list[str] = []
    for version in spark_kafka_candidates(exact):
        jar_set = spark_kafka_jars(version)
        marker = _not_served_marker(root, jar_set)
        cached = cached_jars(jar_set, root)
        if not cached and marker.is_file():
            try:
                recent = time.time() - marker.stat().st_mtime < NOT_SERVED_RECHECK_S
                said = marker.read_text().strip()
            except OSError:
                recent, said = False, ""
            if recent:
                reasons.append(said or f"Maven Central does not serve {jar_set.artifacts[0]}")
                continue
        try:
            jars = cached or resolve(jar_set, root, quiet=quiet)
        except ArtifactNotServed as exc:
            reasons.append(str(exc))
            try:
                marker.write_text(f"{exc}\n")
            except OSError:
                pass
            continue
        except JarsUnavailable as exc:  # no Maven / no network: a cached fallback may still do
            reasons.append(str(exc))
            continue
        try:
            marker.unlink(missing_ok=True)
        except OSError:
            pass
        if version != exact:
            log.warning("Spark's Kafka source %s (the installed PySpark's version) is not available: %s; "
                        "using the %s connector instead", exact, reasons[0] if reasons else "?", version)
        return version, jars
    raise JarsUnavailable("; ".join(dict.fromkeys(reasons)) or f"no connector version to try for PySpark {exact}")


def _shipped_by_pyspark() -> set[str]:
    """Artifact names (no version) of the jars PySpark ships, which must not be added a second time."""
    import pyspark

    folder = Path(pyspark.__file__).parent / "jars"
    return {_artifact_name(j.name) for j in folder.glob("*.jar")}


def _artifact_name(filename: str) -> str:
    m = re.match(r"(.+?)-\d[\w.]*(?:-[A-Za-z]\w*)*\.jar$", filename)
    return m.group(1) if m else filename


def spark_kafka_conf() -> dict[str, str]:
    """Spark conf that puts Spark's Kafka source on the classpath (``spark.jars``), for --kafka-impl spark.

    Under spark-submit the user's own ``--packages``/``--jars`` decide, so nothing is added.
    Otherwise the connector at the installed PySpark's version, or a fallback (resolve_spark_kafka),
    is resolved with Maven (cached); its dependencies that PySpark already ships (Scala, Hadoop
    client, SLF4J, ...) are left out so that only PySpark's own versions are on the classpath.
    When nothing can be had the JarsUnavailable line says why and what to use instead.
    """
    if "SPARK_SUBMIT_OPTS" in os.environ or os.environ.get("SPARK_ENV_LOADED") == "1":
        return {}
    try:
        _, jars = resolve_spark_kafka()
    except JarsUnavailable as exc:
        raise JarsUnavailable(f"--kafka-impl spark: {exc}; use --kafka-impl python (the default), or run "
                              "under spark-submit with the connector on --jars") from None
    shipped = _shipped_by_pyspark()
    jars = [j for j in jars if _artifact_name(j.name) not in shipped]
    return {"spark.jars": ",".join(str(j) for j in jars)}
