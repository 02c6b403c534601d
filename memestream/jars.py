"""Resolve Java jars (Apache Kafka's broker; Spark's Kafka source and Delta Lake) from Maven Central once, then cache them.

Why: the development broker is a real Apache Kafka, and Spark's own Kafka source and Delta Lake are
jars; none ships with a pip-installed PySpark. Maven (``mvn``) resolves an artifact with all its runtime dependencies into a
cache folder on first use (one progress line); later runs use the cache and need no network.

Cache: ``$MEMESTREAM_JAR_CACHE`` or ``~/.cache/memestream``; one sub-folder per jar set
(``kafka-4.1.1/``), written to a temporary folder and renamed when complete, so an interrupted
download is never mistaken for a cached one. Maven's own repository (``~/.m2``) is used as usual.

The Spark side is one pinned stack (:func:`spark_stack_jars`): ``spark-sql-kafka-0-10_2.13`` at
exactly the installed PySpark's version and ``delta-spark_<major.minor>_2.13`` at DELTA_VERSION.
There is no fallback to another version: a missing jar is one line naming the artifacts and the
cache folder (JarsUnavailable).
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


#: Delta Lake's release, matching the ``delta-spark`` PyPI pin in pyproject.toml; its Maven artifact
#: is built per Spark line (``delta-spark_<spark major.minor>_2.13``).
DELTA_VERSION = "4.4.0"


def _installed_spark_version() -> str:
    import pyspark

    return pyspark.__version__


def _major_minor(version: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", version)
    if not m:
        raise JarsUnavailable(f"cannot read a major.minor version from PySpark version {version!r}")
    return int(m.group(1)), int(m.group(2))


def spark_kafka_jars(spark_version: str | None = None) -> JarSet:
    """Spark's Kafka source (``spark-sql-kafka-0-10_2.13``) at exactly the installed PySpark's version."""
    spark_version = spark_version or _installed_spark_version()
    return JarSet(
        name=f"spark-sql-kafka-{spark_version}",
        artifacts=(f"org.apache.spark:spark-sql-kafka-0-10_{SCALA_BINARY}:{spark_version}",),
        description=f"Spark's Kafka source {spark_version}",
    )


def delta_jars(spark_version: str | None = None, delta_version: str = DELTA_VERSION) -> JarSet:
    """Delta Lake's build for the installed PySpark's line: ``io.delta:delta-spark_<major.minor>_2.13``."""
    spark_version = spark_version or _installed_spark_version()
    major, minor = _major_minor(spark_version)
    return JarSet(
        name=f"delta-{delta_version}-spark{major}.{minor}",
        artifacts=(f"io.delta:delta-spark_{major}.{minor}_{SCALA_BINARY}:{delta_version}",),
        description=f"Delta Lake {delta_version} for Spark {major}.{minor}",
    )


def spark_stack_jars(spark_version: str | None = None) -> tuple[JarSet, ...]:
    """The jar sets every Spark session gets: Delta Lake (the output tables) and Spark's Kafka
    source, both pinned to the installed PySpark (no fallback to another version). Each set is
    resolved and cached on its own, so a set already cached is never fetched again."""
    return (delta_jars(spark_version), spark_kafka_jars(spark_version))


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
    """One line from Maven's output: not served, no network, or the first error; it names the
    artifact Maven stopped at (often a dependency, not the one asked for) and the cache folder."""
    wanted = ", ".join(jar_set.artifacts)
    missing = _not_served(output)
    if missing:
        return (f"Maven Central does not serve {missing.group(1)} (needed for {jar_set.description}: {wanted}); "
                f"nothing was cached in {folder}")
    if re.search(r"UnknownHost|Unknown host|Could not transfer|Connection refused|Network is unreachable|timed out|"
                 r"Could not resolve host|No route to host|offline", output, re.IGNORECASE):
        stuck = re.search(r"Could not transfer artifact (\S+)", output)
        at = f" (Maven stopped at {stuck.group(1)}: not served there, or no network?)" if stuck else " (no network?)"
        return (f"{jar_set.description} ({wanted}) is not cached in {folder} and Maven Central cannot be reached"
                f"{at}; run once with network access, or set {CACHE_ENV} to a folder that holds them")
    errors = [ln.strip() for ln in output.splitlines() if ln.startswith("[ERROR]") and ln.strip() != "[ERROR]"]
    detail = errors[0][len("[ERROR]"):].strip() if errors else (output.strip().splitlines() or ["no output"])[-1]
    return f"could not resolve {jar_set.description} ({wanted}) into {folder} with Maven: {detail[:300]}"


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
            f"{jar_set.description} ({', '.join(jar_set.artifacts)}) is not cached in {folder} and Maven ('mvn') is not installed to fetch it "
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


#: Artifacts whose classes PySpark already ships under another artifact name.
SHIPPED_AS = {"commons-logging": "jcl-over-slf4j"}


def _shipped_by_pyspark() -> set[str]:
    """Artifact names (no version) of the jars PySpark ships, which must not be added a second time."""
    import pyspark

    folder = Path(pyspark.__file__).parent / "jars"
    names = {_artifact_name(j.name) for j in folder.glob("*.jar")}
    return names | {ours for ours, theirs in SHIPPED_AS.items() if theirs in names}


def _artifact_name(filename: str) -> str:
    m = re.match(r"(.+?)-\d[\w.]*(?:-[A-Za-z]\w*)*\.jar$", filename)
    return m.group(1) if m else filename


def under_spark_submit() -> bool:
    """Whether this process was launched by spark-submit (its --packages/--jars then decide)."""
    return "SPARK_SUBMIT_OPTS" in os.environ or os.environ.get("SPARK_ENV_LOADED") == "1"


def resolve_spark_stack(root: Path | None = None, quiet: bool = False) -> list[Path]:
    """The stack's jars to add to a session: every set of :func:`spark_stack_jars` resolved
    (cached after the first time), minus the dependencies PySpark already ships (Scala, Hadoop
    client, Jackson, Parquet, SLF4J/log4j, ...), so only PySpark's own versions of those are on
    the classpath, and each artifact once.

    Raises JarsUnavailable (one line naming the artifact and the cache folder) when a set is not
    cached and cannot be fetched.
    """
    shipped = _shipped_by_pyspark()
    out: dict[str, Path] = {}
    for jar_set in spark_stack_jars():
        for jar in resolve(jar_set, root, quiet=quiet):
            name = _artifact_name(jar.name)
            if name not in shipped:
                out.setdefault(name, jar)
    return sorted(out.values(), key=lambda j: j.name)


def spark_stack_conf() -> dict[str, str]:
    """``spark.jars`` with the stack's cached jars (Spark copies them to executors on other
    machines from the driver). Under spark-submit nothing is added: its ``--packages``/``--jars``
    decide (docs/operations.md)."""
    if under_spark_submit():
        return {}
    return {"spark.jars": ",".join(str(j) for j in resolve_spark_stack())}
