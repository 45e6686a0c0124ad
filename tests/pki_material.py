"""Test certificates and keys, made with cryptography (RSA-2048; cached per process)."""

from __future__ import annotations

import datetime as dt
import functools

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

NOW = dt.datetime.now(dt.UTC)


def pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def pem_cert(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@functools.cache
def rsa_key(tag: str):
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def issue(subject: str, key, issuer_name: str, issuer_key, *, ca=False, days=(-1, 365)):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + dt.timedelta(days=days[0]))
        .not_valid_after(NOW + dt.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(issuer_key, hashes.SHA256())


@functools.cache
def lab() -> dict[str, bytes]:
    """A root CA, a gateway certificate it issued (v1 and v2, new keys), an expired one."""
    ca_key, gw1, gw2 = rsa_key("ca"), rsa_key("gw1"), rsa_key("gw2")
    ca = issue("Lab Root CA", ca_key, "Lab Root CA", ca_key, ca=True, days=(-1, 3650))
    gw1_cert = issue("segw.example.net", gw1, "Lab Root CA", ca_key)
    return {
        "ca.crt": pem_cert(ca),
        "gw1.crt": pem_cert(gw1_cert),
        "gw1.key": pem_key(gw1),
        "gw2.crt": pem_cert(issue("segw.example.net", gw2, "Lab Root CA", ca_key)),
        "gw2.key": pem_key(gw2),
        "expired.crt": pem_cert(
            issue("old.example.net", gw1, "Lab Root CA", ca_key, days=(-30, -1))
        ),
        "gw1.der": gw1_cert.public_bytes(serialization.Encoding.DER),
    }


def one_line(pem: bytes) -> str:
    """A PEM as one quoted CLI word, line breaks written as \\n."""
    return '"' + pem.decode().strip().replace("\n", "\\n") + '"'


def key_forms(pem: bytes) -> list[str]:
    """Every form a key's bytes could take in a log or an output line."""
    key = serialization.load_pem_private_key(pem, None)
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    body = "".join(pem.decode().strip().splitlines()[1:-1])
    return [body[10:70], body[-70:-10], der.hex()[40:100], repr(der)[10:60], repr(pem)[40:100]]
