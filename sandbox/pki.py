"""Real PEM material: each vcluster's CA and client certificate, and the API server's own TLS."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class ClusterCredentials:
    ca_pem: str
    client_cert_pem: str
    client_key_pem: str


@dataclass(frozen=True)
class ServingCertificate:
    ca_pem: str
    cert_pem: str
    key_pem: str


def _name(common_name: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _alt_names(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    signer: ec.EllipticCurvePrivateKey,
    days: int,
    extensions: list[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signer, hashes.SHA256())


def _ca(
    common_name: str, sans: list[str] | None = None
) -> tuple[x509.Name, ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=True, path_length=None), True)
    ]
    if sans:
        extensions.append((_alt_names(sans), False))
    return name, key, _certificate(name, key, name, key, 3650, extensions)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: ec.EllipticCurvePrivateKey, fmt: serialization.PrivateFormat) -> str:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


def issue(cluster_name: str, sans: list[str]) -> ClusterCredentials:
    """A self-signed CA (as vcluster makes) and an admin client certificate, ECDSA P-256."""
    ca_name, ca_key, ca = _ca(f"{cluster_name}-ca", sans)
    key = ec.generate_private_key(ec.SECP256R1())
    client = _certificate(
        _name("kube-admin", "system:masters"),
        key,
        ca_name,
        ca_key,
        365,
        [(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)],
    )
    return ClusterCredentials(
        ca_pem=_pem(ca),
        client_cert_pem=_pem(client),
        client_key_pem=_key_pem(key, serialization.PrivateFormat.TraditionalOpenSSL),
    )


def serving_certificate(hosts: list[str]) -> ServingCertificate:
    """A CA and a server certificate for `hosts` (names or IP addresses), as a cluster has."""
    ca_name, ca_key, ca = _ca("sandbox-kube-ca")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(
        _name("kube-apiserver"),
        key,
        ca_name,
        ca_key,
        365,
        [
            (_alt_names(hosts), False),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        ],
    )
    return ServingCertificate(
        ca_pem=_pem(ca),
        cert_pem=_pem(cert),
        key_pem=_key_pem(key, serialization.PrivateFormat.PKCS8),
    )
