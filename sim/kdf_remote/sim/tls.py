"""``https: true``: serve the RPC over TLS on the same address, as KDF does (kdf-facts 1.7).

The certificate comes from ``MM_CERT_PATH`` (default ``cert.pem``) and the key from
``MM_CERT_KEY_PATH`` (default ``key.pem``), relative to the working directory. A missing
certificate is replaced by a self-signed one whose SANs come from ``alt_names``; any other
problem is a panic (exit 101). Imported only when ``https`` is on.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from kdf_remote.sim.config import PanicError
from kdf_remote.sim.kdflog import KdfLog

__all__ = ["DEFAULT_ALT_NAMES", "server_ssl_context"]

DEFAULT_ALT_NAMES = ("localhost", "127.0.0.1")
_LOCATION = "mm2src/mm2_main/src/rpc.rs:431:22"


def server_ssl_context(
    env: Mapping[str, str], cwd: Path, alt_names: Sequence[str], log: KdfLog
) -> ssl.SSLContext:
    """The TLS context of the RPC server; raises :class:`PanicError` as KDF panics."""
    cert_path = cwd / env.get("MM_CERT_PATH", "cert.pem")
    key_path = cwd / env.get("MM_CERT_KEY_PATH", "key.pem")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if not cert_path.exists():
        log.env(
            "INFO",
            "mm2_main::rpc:420",
            f'No certificate found at "{cert_path}", generating a self-signed certificate',
        )
        cert_pem, key_pem = _self_signed(alt_names)
        _load_from_memory(context, cert_pem, key_pem)
        return context
    try:
        context.load_cert_chain(cert_path, key_path)
    except (OSError, ssl.SSLError) as err:
        raise PanicError(f"Failed to read the TLS certificate or key: {err}", _LOCATION) from None
    return context


def _load_from_memory(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    # ssl only loads chains from files: use a private temporary file, removed at once.
    fd, name = tempfile.mkstemp(prefix="kdf-sim-tls-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(cert_pem + key_pem)
        context.load_cert_chain(name)
    finally:
        Path(name).unlink(missing_ok=True)


def _self_signed(alt_names: Sequence[str]) -> tuple[bytes, bytes]:
    try:
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        raise PanicError(
            "Cannot generate a self-signed certificate: kdf-sim needs the `cryptography` "
            "package for that (or set MM_CERT_PATH / MM_CERT_KEY_PATH)",
            _LOCATION,
        ) from None
    sans: list[x509.GeneralName] = []
    for name in alt_names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            if not name or any(not (ch.isalnum() or ch in "-.*") for ch in name):
                raise PanicError(f"Invalid alt_names entry: {name!r}", _LOCATION) from None
            sans.append(x509.DNSName(name))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kdf-sim self-signed")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert_pem, key_pem
