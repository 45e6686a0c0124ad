"""Large CRLs, fast: the TBSCertList written with a small DER encoder and signed with the CA
key (cryptography's CertificateRevocationListBuilder is quadratic in the entries). Used by
bench_crl.py and the refresh test; the encoding is checked by verify_and_index and by
`openssl crl` there."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

SHA256_RSA = bytes.fromhex("300d06092a864886f70d01010b0500")
SHA256_ECDSA = bytes.fromhex("300a06082a8648ce3d040302")
REASON = bytes.fromhex("300c300a0603551d1504030a0101")  # extensions: reasonCode keyCompromise


def tlv(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        return bytes([tag, n]) + value
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + value


def seq(*items: bytes) -> bytes:
    return tlv(0x30, b"".join(items))


def integer(i: int) -> bytes:
    return tlv(0x02, i.to_bytes(i.bit_length() // 8 + 1, "big", signed=True))


def utc(t: dt.datetime) -> bytes:
    return tlv(0x17, t.strftime("%y%m%d%H%M%SZ").encode())


def crl_der(cert, key, n: int, *, seed: int = 1, number: int | None = None,
            extra: tuple[int, ...] = (), next_update: dt.timedelta = dt.timedelta(days=7)) -> bytes:  # fmt: skip
    """A CRL of `cert` (the CA, signed with `key`: RSA or EC) revoking n random 16-octet
    serials (from `seed`) and the `extra` ones; CRL number `number` (default n)."""
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC)
    date = utc(now - dt.timedelta(hours=1))
    entries = []
    serials = [rng.getrandbits(127) | 1 << 120 for _ in range(n)] + list(extra)
    for i, serial in enumerate(serials):
        entries.append(
            seq(integer(serial), date, REASON) if i % 4 == 0 else seq(integer(serial), date)
        )
    alg = SHA256_RSA if isinstance(key, rsa.RSAPrivateKey) else SHA256_ECDSA
    crl_number = tlv(0xA0, seq(seq(tlv(6, b"\x55\x1d\x14"), tlv(4, integer(number or n)))))
    tbs = seq(
        integer(1),
        alg,
        cert.subject.public_bytes(),
        utc(now - dt.timedelta(minutes=5)),
        utc(now + next_update),
        *([seq(*entries)] if entries else []),
        crl_number,
    )
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
    else:
        signature = key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return seq(tbs, alg, tlv(3, b"\x00" + signature))


def write_crl(path: Path, cert, key, n: int, **kw) -> None:
    path.write_bytes(crl_der(cert, key, n, **kw))
