"""Say *why* a secured Kafka connection failed: untrusted certificate, wrong password, wrong listener.

Why: kafka-python retries a failed TLS handshake or SASL login until its bootstrap timeout and
then reports only "Unable to bootstrap" (a wrong SCRAM password shows up as "socket
disconnected"). After such a failure we open one connection of our own, do the TLS handshake
and the SASL exchange step by step (Kafka's SaslHandshake v1 + SaslAuthenticate v0 requests;
the SCRAM messages come from kafka-python's ScramClient), and turn the first step that fails
into one line. The password is never part of any message.
"""
from __future__ import annotations

import socket
import ssl
import struct
from typing import Any

SASL_HANDSHAKE, SASL_AUTHENTICATE = 17, 36
SASL_AUTHENTICATION_FAILED = 58
UNSUPPORTED_SASL_MECHANISM = 33


def _first_server(bootstrap: str) -> tuple[str, int]:
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def _tls_context(sec: Any) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=getattr(sec, "ssl_cafile", None) or None)
    if getattr(sec, "ssl_certfile", None):
        ctx.load_cert_chain(sec.ssl_certfile, getattr(sec, "ssl_keyfile", None) or None)
    return ctx


class _Wire:
    """Just enough of the Kafka wire protocol (non-flexible versions) for the SASL requests."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.correlation = 0

    def request(self, api_key: int, version: int, body: bytes) -> bytes:
        self.correlation += 1
        client = b"memestream-diagnose"
        header = struct.pack(">hhih", api_key, version, self.correlation, len(client)) + client
        self.sock.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
        size = struct.unpack(">i", self._read(4))[0]
        payload = self._read(size)
        return payload[4:]  # drop the correlation id

    def _read(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            out += chunk
        return out


def _string(value: str) -> bytes:
    raw = value.encode("utf-8")
    return struct.pack(">h", len(raw)) + raw


def _sasl(wire: _Wire, sec: Any) -> str | None:
    mechanism = (sec.sasl_mechanism or "").upper()
    body = wire.request(SASL_HANDSHAKE, 1, _string(mechanism))
    error, count = struct.unpack(">hi", body[:6])
    offered, pos = [], 6
    for _ in range(max(count, 0)):
        (n,) = struct.unpack(">h", body[pos:pos + 2])
        offered.append(body[pos + 2:pos + 2 + n].decode())
        pos += 2 + n
    if error == UNSUPPORTED_SASL_MECHANISM or (error == 0 and mechanism not in offered):
        return f"the broker does not accept SASL mechanism {mechanism} (it accepts: {', '.join(offered) or 'none'})"
    if error:
        hint = "; is that a SASL listener?" if error == 34 else ""  # ILLEGAL_SASL_STATE
        return f"the broker refused the SASL handshake (Kafka error code {error}){hint}"
    if not mechanism.startswith("SCRAM-"):
        return None  # PLAIN, OAUTHBEARER, GSSAPI: not probed further
    from kafka.net.sasl.scram import ScramClient

    scram = ScramClient(sec.sasl_plain_username or "", sec.sasl_plain_password or "", mechanism)
    for message in (scram.first_message, None):
        token = message() if message else scram.final_message()
        try:
            body = wire.request(SASL_AUTHENTICATE, 0, struct.pack(">i", len(token)) + token)
        except ConnectionError:
            return (f"SASL {mechanism} authentication as {sec.sasl_plain_username!r} failed: the broker closed "
                    "the connection (wrong user name or password?)")
        (error,) = struct.unpack(">h", body[:2])
        if error:
            return (f"SASL {mechanism} authentication as {sec.sasl_plain_username!r} failed: wrong user name or "
                    "password (the broker rejected the credentials)")
        (n,) = struct.unpack(">h", body[2:4])
        pos = 4 + max(n, 0)
        (size,) = struct.unpack(">i", body[pos:pos + 4])
        reply = body[pos + 4:pos + 4 + size]
        if message:
            scram.process_server_first_message(reply)
    return None


def explain_connect_failure(bootstrap: str, security: Any, timeout_s: float = 5.0) -> str | None:
    """One line on why a secured connection to ``bootstrap`` fails, or None when no cause is found.

    Only SSL/SASL settings are examined (a plain unreachable broker needs no diagnosis).
    """
    protocol = (getattr(security, "security_protocol", None) or "PLAINTEXT").upper()
    if protocol == "PLAINTEXT":
        return None
    host, port = _first_server(bootstrap)
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except OSError:
        return None
    try:
        if protocol in ("SSL", "SASL_SSL"):
            try:
                sock = _tls_context(security).wrap_socket(sock, server_hostname=host)
            except ssl.SSLCertVerificationError as exc:
                cafile = getattr(security, "ssl_cafile", None)
                trusted = f"the CA in {cafile}" if cafile else "the system's CAs (no --ssl-cafile given)"
                return (f"TLS: the broker's certificate at {host}:{port} is not trusted by {trusted} "
                        f"({exc.verify_message})")
            except (ssl.SSLError, OSError) as exc:
                return f"TLS handshake with {host}:{port} failed ({exc}); is that an SSL listener?"
        if protocol.startswith("SASL"):
            try:
                return _sasl(_Wire(sock), security)
            except (ConnectionError, OSError, struct.error) as exc:
                return f"SASL handshake with {host}:{port} failed ({exc}); is that a {protocol} listener?"
        return None
    finally:
        sock.close()
