"""The daemon certificate concept.

``self_signed`` mode (the default): :class:`PrivateCa` is one pulumi-tls CA per stack, and
:class:`DaemonCertificate` issues each server a certificate whose SANs hold its public IP and, when
set, its DNS name. Clients pin the CA from the ``ca_cert_pem`` output. Every key lives only in the
(encrypted) stack state and on the server.

``letsencrypt`` mode needs no resources here: certbot on the server obtains the certificate for the
DNS name (see :func:`~kdf_remote.infra.remote_commands.certbot_command`) and clients use their
system trust store.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from kdf_remote.infra.cloud_sdks import tls

__all__ = ["DaemonCertificate", "DaemonCertificateArgs", "PrivateCa", "PrivateCaArgs"]

CA_VALIDITY_HOURS = 10 * 365 * 24
# Mozilla's guidance caps server certificates at 366 days; renewal starts 30 days early, so any
# `pulumi up` in the last month replaces the certificate.
SERVER_VALIDITY_HOURS = 365 * 24
EARLY_RENEWAL_HOURS = 30 * 24


@dataclass(frozen=True)
class PrivateCaArgs:
    """Inputs of :class:`PrivateCa`."""

    common_name: str


class PrivateCa(pulumi.ComponentResource):
    """An ECDSA P-256 certificate authority that signs the stack's daemon certificates."""

    cert_pem: pulumi.Output[str]
    private_key_pem: pulumi.Output[str]

    def __init__(
        self, name: str, args: PrivateCaArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("kdf-remote:infra:PrivateCa", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        key = tls.PrivateKey(f"{name}-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        cert = tls.SelfSignedCert(
            f"{name}-cert",
            private_key_pem=key.private_key_pem,
            is_ca_certificate=True,
            max_path_length=0,
            set_subject_key_id=True,
            validity_period_hours=CA_VALIDITY_HOURS,
            allowed_uses=["cert_signing", "crl_signing"],
            subject=tls.SelfSignedCertSubjectArgs(
                common_name=args.common_name, organization="kdf-remote"
            ),
            opts=child,
        )
        self.cert_pem = cert.cert_pem
        self.private_key_pem = pulumi.Output.secret(key.private_key_pem)
        self.register_outputs({"cert_pem": self.cert_pem})


@dataclass(frozen=True)
class DaemonCertificateArgs:
    """Inputs of :class:`DaemonCertificate`."""

    ca: PrivateCa
    ip: pulumi.Input[str]
    dns_name: str | None = None


class DaemonCertificate(pulumi.ComponentResource):
    """The TLS certificate and key one daemon serves."""

    cert_pem: pulumi.Output[str]
    private_key_pem: pulumi.Output[str]
    ca_pem: pulumi.Output[str]

    def __init__(
        self, name: str, args: DaemonCertificateArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("kdf-remote:infra:DaemonCertificate", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        key = tls.PrivateKey(f"{name}-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        request = tls.CertRequest(
            f"{name}-csr",
            private_key_pem=key.private_key_pem,
            ip_addresses=[args.ip],
            dns_names=[args.dns_name] if args.dns_name else [],
            subject=tls.CertRequestSubjectArgs(
                common_name=args.dns_name or args.ip, organization="kdf-remote"
            ),
            opts=child,
        )
        cert = tls.LocallySignedCert(
            f"{name}-cert",
            cert_request_pem=request.cert_request_pem,
            ca_cert_pem=args.ca.cert_pem,
            ca_private_key_pem=args.ca.private_key_pem,
            validity_period_hours=SERVER_VALIDITY_HOURS,
            early_renewal_hours=EARLY_RENEWAL_HOURS,
            allowed_uses=["digital_signature", "key_encipherment", "server_auth"],
            opts=child,
        )
        self.cert_pem = cert.cert_pem
        self.private_key_pem = pulumi.Output.secret(key.private_key_pem)
        self.ca_pem = args.ca.cert_pem
        self.register_outputs({"cert_pem": self.cert_pem})
