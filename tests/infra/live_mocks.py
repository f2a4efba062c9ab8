"""Pulumi mocks that answer with real key material, for running the program's commands for real.

:class:`LiveMocks` stands in for pulumi-random and pulumi-tls the way their providers behave: a
random password of the requested length and alphabet, random bytes, ECDSA / Ed25519 / RSA keys,
a self-signed CA and a certificate signed by it from a certificate request, each built with the
inputs the program gave (subject, SANs, validity, allowed uses). The SSH bootstrap test runs the
program under these mocks, then executes its remote commands against a local sshd and imports
its outputs into a client profile, so every secret and certificate must actually work.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import secrets
import string
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from infra_mocks import KdfMocks, unwrap  # type: ignore[import-not-found]
from pulumi.runtime.mocks import MockResourceArgs

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey

_CURVES: dict[str, ec.EllipticCurve] = {
    "P224": ec.SECP224R1(),
    "P256": ec.SECP256R1(),
    "P384": ec.SECP384R1(),
    "P521": ec.SECP521R1(),
}
_KEY_USAGE_FLAGS = {
    "digital_signature": "digital_signature",
    "content_commitment": "content_commitment",
    "key_encipherment": "key_encipherment",
    "data_encipherment": "data_encipherment",
    "key_agreement": "key_agreement",
    "cert_signing": "key_cert_sign",
    "crl_signing": "crl_sign",
}
_EXTENDED_USAGES = {
    "server_auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH,
}
_SPECIAL = "!@#$%&*()-_=+[]{}<>:?"


def _private_key(inputs: dict[str, Any]) -> PrivateKey:
    algorithm = inputs.get("algorithm", "RSA")
    if algorithm == "ECDSA":
        return ec.generate_private_key(_CURVES[inputs.get("ecdsaCurve", "P224")])
    if algorithm == "ED25519":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(65537, int(inputs.get("rsaBits", 2048)))


def _key_state(key: PrivateKey) -> dict[str, str]:
    # pulumi-tls writes ECDSA and RSA keys in the traditional OpenSSL form, Ed25519 as PKCS#8.
    form = (
        serialization.PrivateFormat.PKCS8
        if isinstance(key, ed25519.Ed25519PrivateKey)
        else serialization.PrivateFormat.TraditionalOpenSSL
    )
    none = serialization.NoEncryption()
    return {
        "privateKeyPem": key.private_bytes(serialization.Encoding.PEM, form, none).decode(),
        "privateKeyOpenssh": key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, none
        ).decode(),
        "publicKeyPem": key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode(),
        "publicKeyOpenssh": key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
        + "\n",
    }


def _load_key(pem: str) -> PrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, PrivateKey), type(key)
    return key


def _name(subject: dict[str, Any] | None) -> x509.Name:
    subject = subject or {}
    attributes = []
    if subject.get("organization"):
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, subject["organization"]))
    if subject.get("commonName"):
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, subject["commonName"]))
    return x509.Name(attributes)


def _signature_hash(key: PrivateKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _usages(builder: x509.CertificateBuilder, allowed: list[str]) -> x509.CertificateBuilder:
    flags = dict.fromkeys(_KEY_USAGE_FLAGS.values(), False)
    for use in allowed:
        if use in _KEY_USAGE_FLAGS:
            flags[_KEY_USAGE_FLAGS[use]] = True
    builder = builder.add_extension(
        x509.KeyUsage(encipher_only=False, decipher_only=False, **flags), critical=True
    )
    extended = [_EXTENDED_USAGES[u] for u in allowed if u in _EXTENDED_USAGES]
    if extended:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended), critical=False)
    return builder


def _validity(builder: x509.CertificateBuilder, hours: float) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return builder.not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(
        now + datetime.timedelta(hours=hours)
    )


def _self_signed(inputs: dict[str, Any]) -> str:
    key = _load_key(inputs["privateKeyPem"])
    name = _name(inputs.get("subject"))
    is_ca = bool(inputs.get("isCaCertificate"))
    path_length = int(inputs["maxPathLength"]) if is_ca and "maxPathLength" in inputs else None
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=path_length), critical=True)
    )
    builder = _validity(builder, float(inputs["validityPeriodHours"]))
    builder = _usages(builder, list(inputs.get("allowedUses", [])))
    if inputs.get("setSubjectKeyId"):
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    return builder.sign(key, _signature_hash(key)).public_bytes(serialization.Encoding.PEM).decode()


def _request(inputs: dict[str, Any]) -> str:
    key = _load_key(inputs["privateKeyPem"])
    sans: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address(ip)) for ip in inputs.get("ipAddresses", [])
    ]
    sans += [x509.DNSName(name) for name in inputs.get("dnsNames", [])]
    builder = x509.CertificateSigningRequestBuilder().subject_name(_name(inputs.get("subject")))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, _signature_hash(key)).public_bytes(serialization.Encoding.PEM).decode()


def _locally_signed(inputs: dict[str, Any]) -> str:
    request = x509.load_pem_x509_csr(inputs["certRequestPem"].encode())
    ca_cert = x509.load_pem_x509_certificate(inputs["caCertPem"].encode())
    ca_key = _load_key(inputs["caPrivateKeyPem"])
    builder = (
        x509.CertificateBuilder()
        .subject_name(request.subject)
        .issuer_name(ca_cert.subject)
        .public_key(request.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(request.public_key()), critical=False
        )
    )
    for extension in request.extensions:
        builder = builder.add_extension(extension.value, critical=extension.critical)
    builder = _validity(builder, float(inputs["validityPeriodHours"]))
    builder = _usages(builder, list(inputs.get("allowedUses", [])))
    return (
        builder.sign(ca_key, _signature_hash(ca_key))
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )


def _password(inputs: dict[str, Any]) -> str:
    alphabet = string.ascii_letters + string.digits
    if inputs.get("special", True):
        alphabet += inputs.get("overrideSpecial") or _SPECIAL
    return "".join(secrets.choice(alphabet) for _ in range(int(inputs["length"])))


class LiveMocks(KdfMocks):  # type: ignore[misc]  # the harness is imported untyped
    """:class:`KdfMocks`, with real randomness, keys and certificates from random/tls."""

    def new_resource(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        inputs: dict[str, Any] = unwrap(dict(args.inputs))
        t = args.typ
        state = dict(inputs)
        if t == "tls:index/privateKey:PrivateKey":
            state.update(_key_state(_private_key(inputs)))
        elif t == "tls:index/selfSignedCert:SelfSignedCert":
            state["certPem"] = _self_signed(inputs)
        elif t == "tls:index/certRequest:CertRequest":
            state["certRequestPem"] = _request(inputs)
        elif t == "tls:index/locallySignedCert:LocallySignedCert":
            state["certPem"] = _locally_signed(inputs)
        elif t == "random:index/randomPassword:RandomPassword":
            state["result"] = _password(inputs)
        elif t == "random:index/randomBytes:RandomBytes":
            raw = os.urandom(int(inputs["length"]))
            state["base64"] = base64.b64encode(raw).decode()
            state["hex"] = raw.hex()
        else:
            return cast("tuple[str, dict[str, Any]]", super().new_resource(args))
        return f"{args.name}-id", state
