"""``tls init``: a private CA and a server certificate for daemons without a public domain.

The CA is ECDSA P-256, valid ten years, and name-constrained to the SANs it was created for, so
even a stolen ``ca.key`` cannot mint certificates for other names. The server certificate is
ECDSA P-256, valid ``days`` (365 by default; Mozilla recommends at most 366), carries the given
SANs (DNS names and IP addresses) and ``serverAuth`` only. Clients pin ``ca.pem``.

Re-running with ``force=True`` keeps an existing CA (clients keep their pin) and issues a new
server certificate, as long as the CA's name constraints cover the requested SANs.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kdf_remote.daemon.security.errors import CertificateError
from kdf_remote.daemon.security.files import write_private_file

__all__ = ["TlsFiles", "init_tls", "parse_san"]

CA_DAYS: Final = 3650
MAX_SERVER_DAYS: Final = 825
_DNS_NAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)

San = x509.DNSName | x509.IPAddress


class TlsFiles(msgspec.Struct, frozen=True, kw_only=True):
    """Where ``tls init`` wrote its files."""

    ca_cert: str
    ca_key: str
    server_cert: str
    server_key: str
    ca_created: bool
    """False when an existing CA was reused."""
    sans: list[str]
    not_after: str


def parse_san(text: str) -> San:
    """A SAN from ``--san``: an IP address or a DNS name.

    Raises:
        CertificateError: neither.
    """
    value = text.strip()
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        pass
    if _DNS_NAME.match(value) is None:
        raise CertificateError(f"--san: got {text!r}, expected a DNS name or an IP address")
    return x509.DNSName(value.lower())


def _constraint(san: San) -> x509.GeneralName:
    if isinstance(san, x509.IPAddress):
        address = san.value
        assert isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address)
        return x509.IPAddress(ipaddress.ip_network(address))
    return san


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _new_ca(
    sans: Sequence[San], now: dt.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kdf-remote private CA")])
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.NameConstraints(
                permitted_subtrees=[_constraint(s) for s in sans], excluded_subtrees=None
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _server_cert(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    sans: Sequence[San],
    days: int,
    now: dt.datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    # A CN that is not a host name: name constraints then apply to the SANs alone.
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kdf-remote daemon")])
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _load_ca(
    cert_path: Path, key_path: Path
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise CertificateError(
            f"cannot load the existing CA in {cert_path.parent}: {exc}"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{key_path}: expected an EC private key")
    public = cert.public_key()
    if (
        not isinstance(public, ec.EllipticCurvePublicKey)
        or public.public_numbers() != key.public_key().public_numbers()
    ):
        raise CertificateError(f"{cert_path} and {key_path} do not belong together")
    return cert, key


def _covered(ca_cert: x509.Certificate, sans: Sequence[San]) -> list[str]:
    """SANs outside the CA's permitted subtrees."""
    try:
        constraints = ca_cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return []
    permitted = constraints.permitted_subtrees or []
    missing = []
    for san in sans:
        if isinstance(san, x509.IPAddress):
            ok = any(
                isinstance(p, x509.IPAddress)
                and isinstance(p.value, ipaddress.IPv4Network | ipaddress.IPv6Network)
                and san.value in p.value
                for p in permitted
            )
        else:
            ok = any(
                isinstance(p, x509.DNSName)
                and (san.value == p.value or san.value.endswith("." + p.value))
                for p in permitted
            )
        if not ok:
            missing.append(str(san.value))
    return missing


def init_tls(
    directory: Path,
    sans: Sequence[str],
    *,
    days: int = 365,
    force: bool = False,
    now: dt.datetime | None = None,
) -> TlsFiles:
    """Write ``ca.pem``, ``ca.key``, ``server.pem``, ``server.key`` in ``directory`` (keys 0600).

    Args:
        directory: created (0700) when missing.
        sans: DNS names and IP addresses the server answers on (at least one).
        days: server certificate lifetime.
        force: replace an existing server certificate (an existing CA is kept and reused).
        now: the issuing time (tests).

    Raises:
        CertificateError: no or bad SAN, bad ``days``, existing files without ``force``, or an
            existing CA whose name constraints do not cover the SANs.
    """
    if not sans:
        raise CertificateError("--san: at least one DNS name or IP address is required")
    if not 1 <= days <= MAX_SERVER_DAYS:
        raise CertificateError(f"--days: got {days}, expected 1 to {MAX_SERVER_DAYS}")
    parsed: list[San] = []
    for text in sans:
        san = parse_san(text)
        if san not in parsed:
            parsed.append(san)
    moment = now or dt.datetime.now(dt.UTC)
    ca_cert_path, ca_key_path = directory / "ca.pem", directory / "ca.key"
    server_cert_path, server_key_path = directory / "server.pem", directory / "server.key"
    if not force and (server_cert_path.exists() or server_key_path.exists()):
        raise CertificateError(
            f"{directory} already holds server.pem/server.key; pass --force to replace them"
        )
    ca_exists = ca_cert_path.exists() and ca_key_path.exists()
    if ca_exists:
        ca_cert, ca_key = _load_ca(ca_cert_path, ca_key_path)
        missing = _covered(ca_cert, parsed)
        if missing:
            raise CertificateError(
                f"the existing CA in {directory} may not sign {', '.join(missing)}; "
                "remove ca.pem and ca.key to create a new CA (clients must then re-import it)"
            )
    elif ca_cert_path.exists() or ca_key_path.exists():
        raise CertificateError(f"{directory} holds only half a CA (ca.pem or ca.key); remove it")
    else:
        ca_cert, ca_key = _new_ca(parsed, moment)
        write_private_file(ca_key_path, _pem_key(ca_key), overwrite=False)
        write_private_file(
            ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM), mode=0o644
        )
    cert, key = _server_cert(ca_cert, ca_key, parsed, days, moment)
    write_private_file(server_key_path, _pem_key(key))
    chain = cert.public_bytes(serialization.Encoding.PEM)
    write_private_file(server_cert_path, chain, mode=0o644)
    return TlsFiles(
        ca_cert=str(ca_cert_path),
        ca_key=str(ca_key_path),
        server_cert=str(server_cert_path),
        server_key=str(server_key_path),
        ca_created=not ca_exists,
        sans=[str(s.value) for s in parsed],
        not_after=cert.not_valid_after_utc.isoformat(),
    )
