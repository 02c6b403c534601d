"""Test helpers for Kafka security: a throwaway CA and server certificate, and a SASL+SSL broker.

Why here: the certificates are made inside the test run (the ``cryptography`` package), never
stored in the repository, and a broker with SASL_PLAINTEXT (SCRAM-SHA-512) and SSL listeners
is started through the same ``producers.broker`` as every other test broker.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pki:
    ca_pem: Path          # the CA certificate clients trust
    server_pem: Path      # server key (PKCS#8, unencrypted) + certificate, one PEM file for Kafka
    other_ca_pem: Path    # a CA that did not sign the server's certificate


def _name(common_name: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(common_name: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_pki(folder: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1/localhost signed by it, and an unrelated CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca("memestream test CA")
    _, other_cert = _ca("someone else's CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    ca_pem, server_pem, other_pem = folder / "ca.pem", folder / "server.pem", folder / "other-ca.pem"
    ca_pem.write_bytes(ca_cert.public_bytes(pem))
    other_pem.write_bytes(other_cert.public_bytes(pem))
    server_pem.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
                           + cert.public_bytes(pem))
    return Pki(ca_pem, server_pem, other_pem)


def secure_broker_settings(pki: Pki) -> dict[str, str]:
    """Broker settings for a SASL_PLAINTEXT (SCRAM-SHA-512) listener and an SSL listener (PEM files)."""
    return {
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "listener.name.ssl.ssl.keystore.type": "PEM",
        "listener.name.ssl.ssl.keystore.location": str(pki.server_pem),
        "listener.name.ssl.ssl.client.auth": "none",
    }
