"""The trial stack's own certificate authority: mutual TLS between the parts that hold its keys.

`make team-up` and `make cluster-up` each need certificates that only this
project's account can read: a CA made once under `.team/tls/`, and one
certificate per part signed by it, for 127.0.0.1 and localhost, good for both
ends of a connection (server and client). Every key file is created 0600 in a
0700 folder; nothing else of the machine trusts this CA.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from src.io import private_folder, write_private

VALID_DAYS = 3650


@dataclass(frozen=True)
class Certificate:
    """A part's certificate and key, with the CA that signed it (PEM files)."""

    cert: Path
    key: Path
    ca: Path


def _new_key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _authority(folder: Path):
    """Load the CA of `folder`, making it first if there is none."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    cert_path, key_path = folder / "ca.crt", folder / "ca.key"
    if cert_path.exists() and key_path.exists():
        return x509.load_pem_x509_certificate(cert_path.read_bytes()), serialization.load_pem_private_key(
            key_path.read_bytes(), None
        )
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"trial stack CA ({folder.parent.parent.name})")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
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
        .sign(key, hashes.SHA256())
    )
    write_private(key_path, _pem_key(key))
    write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def issue(folder: Path, part: str) -> Certificate:
    """The certificate of `part` (e.g. `s3`, `dask-scheduler`) signed by the CA of `folder`, made if missing.

    It names 127.0.0.1 and localhost and serves as server and client alike, so
    the same pair lets a part accept connections and make them.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    private_folder(folder)
    found = Certificate(folder / f"{part}.crt", folder / f"{part}.key", folder / "ca.crt")
    if found.cert.exists() and found.key.exists() and found.ca.exists():
        return found
    ca_cert, ca_key = _authority(folder)
    key = _new_key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, part)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    write_private(found.key, _pem_key(key))
    write_private(found.cert, cert.public_bytes(serialization.Encoding.PEM))
    return found
