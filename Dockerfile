# memestream app image: every console script (meme-train, meme-stream, meme-drop,
# meme-publish, meme-query, ...) plus Spark's own launchers (spark-class, spark-submit)
# from the pyspark wheel, so the same image serves as driver, master and worker.
#
#   docker build -t memestream:latest .
#   docker run --rm memestream:latest meme-stream --help
#
# bookworm pinned: it is the Debian release that still ships openjdk-17-jre-headless.
FROM python:3.11-slim-bookworm

# (slim images lack /usr/share/man/man1, which the JRE's post-install step needs)
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s "$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")" /opt/java

ENV JAVA_HOME=/opt/java \
    PYSPARK_PYTHON=python3 \
    PYSPARK_DRIVER_PYTHON=python3 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first (a code change does not re-download pyspark): install the
# project's requirements from pyproject.toml with a stub package, then the real code.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib;print('\n'.join(tomllib.load(open('pyproject.toml','rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

COPY memestream ./memestream
COPY batch_training ./batch_training
COPY producers ./producers
COPY streaming ./streaming
COPY bench ./bench
RUN pip install --no-deps . \
 && useradd --create-home --uid 1000 meme \
 && mkdir -p /data /models /inbox /output /checkpoints /incoming \
 && chown -R meme:meme /data /models /inbox /output /checkpoints /incoming

USER meme
CMD ["meme-stream", "--help"]
