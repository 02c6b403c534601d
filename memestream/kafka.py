"""Kafka client settings shared by the publisher (``producers.kafka``) and the streaming source.

Both ends must agree on security (TLS/SASL) and on how large one record may be, so those
live here, in the core, rather than in either of them.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any

from memestream.abspath import absolute_fields
from memestream.cli import env_flag
from memestream.errors import ConfigError

#: Largest image one record may carry (the broker's message.max.bytes must allow it too).
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: Room for key, headers and record/batch framing on top of the image bytes.
RECORD_OVERHEAD_BYTES = 64 * 1024
SECRET_FIELDS = ("sasl_plain_password",)


@dataclass(frozen=True)
class KafkaSecurity:
    """Client security settings shared by the publisher and the streaming source; repr masks the password."""

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    def __post_init__(self) -> None:
        absolute_fields(self, "ssl_cafile", "ssl_certfile", "ssl_keyfile")

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python clients (unset values left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, "")}

    def java_client_options(self, prefix: str = "kafka.") -> dict[str, str]:
        """The same settings for a Java Kafka client (Spark's Kafka source: ``kafka.*`` options).

        SASL PLAIN/SCRAM become a ``sasl.jaas.config`` line (it holds the password: Spark redacts
        it through ``spark.redaction.regex``, memestream.spark.REDACTION_REGEX). PEM files map to
        PEM trust/key stores (Kafka clients 2.7+): the CA file by location, the client certificate
        and key inline (``ssl.keystore.certificate.chain`` / ``ssl.keystore.key``, the key in
        unencrypted PKCS#8 PEM), so executors on other machines need no local copy of them.
        """
        from pathlib import Path

        opts: dict[str, str] = {"security.protocol": self.security_protocol or "PLAINTEXT"}
        if self.sasl_mechanism:
            opts["sasl.mechanism"] = self.sasl_mechanism
            module = ("org.apache.kafka.common.security.plain.PlainLoginModule" if self.sasl_mechanism == "PLAIN"
                      else "org.apache.kafka.common.security.scram.ScramLoginModule")

            def quoted(v: str | None) -> str:
                return '"' + (v or "").replace("\\", "\\\\").replace('"', '\\"') + '"'

            opts["sasl.jaas.config"] = (f"{module} required username={quoted(self.sasl_plain_username)} "
                                        f"password={quoted(self.sasl_plain_password)};")
        if self.ssl_cafile:
            opts["ssl.truststore.type"] = "PEM"
            opts["ssl.truststore.location"] = str(self.ssl_cafile)
        if self.ssl_certfile and self.ssl_keyfile:
            try:
                chain = Path(self.ssl_certfile).read_text()
                key = Path(self.ssl_keyfile).read_text()
            except OSError as exc:
                raise ConfigError(f"cannot read the TLS client certificate or key: {exc.strerror or exc}: "
                                  f"{exc.filename}") from None
            opts["ssl.keystore.type"] = "PEM"
            opts["ssl.keystore.certificate.chain"] = chain
            opts["ssl.keystore.key"] = key
        return {prefix + k: v for k, v in opts.items()}

    def __repr__(self) -> str:
        shown = {k: ("***" if k in SECRET_FIELDS and v else v) for k, v in dataclasses.asdict(self).items()}
        return "KafkaSecurity(" + ", ".join(f"{k}={v!r}" for k, v in shown.items() if v is not None) + ")"


def bootstrap_list(servers: str) -> list[str]:
    """``"h1:9092,h2:9092"`` -> the list kafka-python clients take."""
    return servers.split(",")


def add_security_flags(parser: argparse.ArgumentParser) -> None:
    """Kafka client security flags with MEMESTREAM_KAFKA_* env fallbacks (password: env preferred)."""
    group = parser.add_argument_group("Kafka security")
    env_flag(group, "--security-protocol", envvar="MEMESTREAM_KAFKA_SECURITY_PROTOCOL", default="PLAINTEXT",
             choices=["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"], help="Kafka security protocol")
    env_flag(group, "--sasl-mechanism", envvar="MEMESTREAM_KAFKA_SASL_MECHANISM", help="e.g. PLAIN, SCRAM-SHA-256")
    env_flag(group, "--sasl-username", envvar="MEMESTREAM_KAFKA_SASL_USERNAME", help="SASL user name")
    env_flag(group, "--sasl-password", envvar="MEMESTREAM_KAFKA_SASL_PASSWORD",
             help="SASL password (prefer the env var: flags show up in ps)")
    env_flag(group, "--ssl-cafile", envvar="MEMESTREAM_KAFKA_SSL_CAFILE", help="CA bundle (PEM)")
    env_flag(group, "--ssl-certfile", envvar="MEMESTREAM_KAFKA_SSL_CERTFILE", help="client certificate (PEM)")
    env_flag(group, "--ssl-keyfile", envvar="MEMESTREAM_KAFKA_SSL_KEYFILE", help="client key (PEM)")


def security_from_args(args: argparse.Namespace) -> KafkaSecurity:
    """The flags of :func:`add_security_flags` as a :class:`KafkaSecurity`; SASL needs a mechanism."""
    sec = KafkaSecurity(
        security_protocol=args.security_protocol or "PLAINTEXT",
        sasl_mechanism=args.sasl_mechanism,
        sasl_plain_username=args.sasl_username,
        sasl_plain_password=args.sasl_password,
        ssl_cafile=args.ssl_cafile,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
    )
    if sec.security_protocol.startswith("SASL") and not sec.sasl_mechanism:
        raise ConfigError(f"expected --sasl-mechanism with --security-protocol {sec.security_protocol}, found none")
    return sec
