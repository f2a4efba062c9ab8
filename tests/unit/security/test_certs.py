"""``tls init``: the CA and server certificate verify, carry the SANs, and keys are private."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from kdf_remote.daemon.security.certs import init_tls, parse_san
from kdf_remote.daemon.security.errors import CertificateError

pytestmark = [pytest.mark.unit, pytest.mark.security]

SANS = ["kdf.example.com", "203.0.113.7", "localhost"]


def _load(path: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def _verify(
    ca: x509.Certificate, leaf: x509.Certificate, name: x509.DNSName | x509.IPAddress
) -> None:
    when = dt.datetime.now(dt.UTC)
    verifier = PolicyBuilder().store(Store([ca])).time(when).build_server_verifier(name)
    verifier.verify(leaf, [])


def test_server_certificate_verifies_with_the_ca_for_every_san(tmp_path: Path) -> None:
    """The leaf chains to the CA and is valid for each SAN, and for nothing else."""
    files = init_tls(tmp_path / "tls", SANS)
    ca, leaf = _load(files.ca_cert), _load(files.server_cert)
    for name in (
        x509.DNSName("kdf.example.com"),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("203.0.113.7")),
    ):
        _verify(ca, leaf, name)
    for wrong in (
        x509.DNSName("evil.example.com"),
        x509.IPAddress(ipaddress.ip_address("192.0.2.1")),
    ):
        with pytest.raises(VerificationError):
            _verify(ca, leaf, wrong)


def test_certificate_profile_and_file_modes(tmp_path: Path) -> None:
    """SANs, serverAuth only, not a CA, P-256 keys, a 365-day life; keys 0600, certs 0644."""
    files = init_tls(tmp_path / "tls", SANS)
    leaf = _load(files.server_cert)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(sans.get_values_for_type(x509.DNSName)) == ["kdf.example.com", "localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("203.0.113.7")]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    key = leaf.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    life = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert dt.timedelta(days=365) <= life <= dt.timedelta(days=365, minutes=10)
    for path, mode in (
        (files.ca_key, 0o600),
        (files.server_key, 0o600),
        (files.ca_cert, 0o644),
        (files.server_cert, 0o644),
    ):
        assert stat.S_IMODE(Path(path).stat().st_mode) == mode


def test_ca_is_name_constrained_to_the_sans(tmp_path: Path) -> None:
    """A leaf for another name signed by the same CA key is refused by the CA's constraints."""
    from cryptography.hazmat.primitives import hashes, serialization

    files = init_tls(tmp_path / "tls", ["kdf.example.com"])
    ca = _load(files.ca_cert)
    ca_key = serialization.load_pem_private_key(Path(files.ca_key).read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value

    def leaf_for(name: str) -> x509.Certificate:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )

    # Control: the same construction for a permitted name verifies.
    _verify(ca, leaf_for("kdf.example.com"), x509.DNSName("kdf.example.com"))
    with pytest.raises(VerificationError):
        _verify(ca, leaf_for("bank.example"), x509.DNSName("bank.example"))


def test_existing_files_need_force_and_force_keeps_the_ca(tmp_path: Path) -> None:
    """A second run refuses; ``force`` issues a new server certificate under the same CA."""
    directory = tmp_path / "tls"
    first = init_tls(directory, SANS)
    ca_before = Path(first.ca_cert).read_bytes()
    with pytest.raises(CertificateError, match="--force"):
        init_tls(directory, SANS)
    second = init_tls(directory, ["localhost"], force=True)
    assert not second.ca_created
    assert Path(second.ca_cert).read_bytes() == ca_before
    _verify(_load(second.ca_cert), _load(second.server_cert), x509.DNSName("localhost"))
    with pytest.raises(CertificateError, match="may not sign"):
        init_tls(directory, ["other.example.org"], force=True)


def test_bad_input_is_refused() -> None:
    """No SAN, a malformed name, or an absurd lifetime is refused with the option named."""
    with pytest.raises(CertificateError, match="--san"):
        init_tls(Path("/nonexistent"), [])
    with pytest.raises(CertificateError, match="--san"):
        parse_san("bad name")
    with pytest.raises(CertificateError, match="--days"):
        init_tls(Path("/nonexistent"), ["localhost"], days=5000)
    assert isinstance(parse_san("::1"), x509.IPAddress)
    assert parse_san("KDF.Example.com") == x509.DNSName("kdf.example.com")
