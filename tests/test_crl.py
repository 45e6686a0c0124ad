"""CRLs: the serial index (chassis.ipc.crl_index), verify_and_index, and CrlCache (sans-IO:
fake fetch, inline worker, manual wall clock). Real CRLs are built here with cryptography."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import struct

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chassis.ipc import crl_index
from chassis.ipc.crl_index import CrlIndex
from supervisor.pki.crl import CrlCache, CrlError, Entry, verify_and_index
from supervisor.pki.urls import CRL_LIMIT, FetchError

DER = serialization.Encoding.DER
PEM = serialization.Encoding.PEM
T0 = 1_900_000_000.0  # 2030-03-17: the tests' wall clock, far from the real one
DAY = 86400.0
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def when(t: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, dt.UTC)


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@functools.cache
def key(tag: str, kind: str = "ec"):
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def sign_hash(k):
    return None if isinstance(k, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def make_ca(cn: str = "Test CA", k=None, *, ski: bool = True, crl_sign: bool | None = True):
    """A self-signed CA certificate (DER) and its key."""
    k = k or key(cn)
    b = (
        x509.CertificateBuilder()
        .subject_name(name(cn))
        .issuer_name(name(cn))
        .public_key(k.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(when(T0 - 365 * DAY))
        .not_valid_after(when(T0 + 3650 * DAY))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    if ski:
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(k.public_key()), False)
    if crl_sign is not None:
        usage = dict.fromkeys(
            ["digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
             "key_agreement", "encipher_only", "decipher_only"], False)  # fmt: skip
        b = b.add_extension(
            x509.KeyUsage(key_cert_sign=True, crl_sign=crl_sign, **usage), critical=True
        )
    return b.sign(k, sign_hash(k)).public_bytes(DER), k


def make_crl(
    ca_der: bytes,
    ca_key,
    serials=(),
    *,
    this: float = T0 - 60,
    next: float | None = T0 + DAY,
    number: int | None = 1,
    aki: bool = True,
    extensions=(),
    entry_extensions=(),
    signer=None,
    encoding=DER,
) -> bytes:
    ca = x509.load_der_x509_certificate(ca_der)
    b = x509.CertificateRevocationListBuilder().issuer_name(ca.subject).last_update(when(this))
    if next is not None:
        b = b.next_update(when(next))
    if number is not None:
        b = b.add_extension(x509.CRLNumber(number), critical=False)
    if aki:
        b = b.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()), critical=False
        )
    for ext, critical in extensions:
        b = b.add_extension(ext, critical=critical)
    for serial in serials:
        r = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when(this))
        for ext, critical in entry_extensions:
            r = r.add_extension(ext, critical=critical)
        b = b.add_revoked_certificate(r.build())
    signer = signer or ca_key
    return b.sign(signer, sign_hash(signer)).public_bytes(encoding)


def tlv(tag: int, value: bytes) -> bytes:
    n = len(value)
    size = (
        bytes([n])
        if n < 0x80
        else bytes([0x80 | (n.bit_length() + 7) // 8])
        + n.to_bytes((n.bit_length() + 7) // 8, "big")
    )
    return bytes([tag]) + size + value


def seq(*items: bytes) -> bytes:
    return tlv(0x30, b"".join(items))


def integer(i: int) -> bytes:
    return tlv(0x02, i.to_bytes(i.bit_length() // 8 + 1, "big", signed=True))


def utc(t: float) -> bytes:
    return tlv(0x17, when(t).strftime("%y%m%d%H%M%SZ").encode())


def oid(dotted: str) -> bytes:
    a, b, *rest = (int(x) for x in dotted.split("."))
    out = bytearray([40 * a + b])
    for n in rest:
        chunk = [n & 0x7F]
        while n > 0x7F:
            n >>= 7
            chunk.append(0x80 | (n & 0x7F))
        out += bytes(reversed(chunk))
    return tlv(6, bytes(out))


def raw_crl(
    ca_der: bytes, ca_key, serials, *, this: float = T0 - 60, next=T0 + DAY, entries=None
) -> bytes:
    """A CRL encoded here, for serials cryptography's builder refuses (0, negative, 160 bits).
    entries: ready-made revokedCertificate DER elements instead of serials."""
    ca = x509.load_der_x509_certificate(ca_der)
    if isinstance(ca_key, rsa.RSAPrivateKey):
        alg = seq(tlv(6, bytes.fromhex("2a864886f70d01010b")), b"\x05\x00")
        sign = lambda tbs: ca_key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())  # noqa: E731
    else:
        alg = seq(tlv(6, bytes.fromhex("2a8648ce3d040302")))
        sign = lambda tbs: ca_key.sign(tbs, ec.ECDSA(hashes.SHA256()))  # noqa: E731
    if entries is None:
        entries = [seq(integer(s), utc(this)) for s in serials]
    tbs = seq(
        integer(1),
        alg,
        ca.subject.public_bytes(),
        utc(this),
        *([utc(next)] if next is not None else []),
        *([seq(*entries)] if entries else []),
    )
    return seq(tbs, alg, tlv(3, b"\x00" + sign(tbs)))


@functools.cache
def lab():
    """One CA and a small CRL (serials of 1, 9 and 20 octets) used by many tests."""
    ca, k = make_ca("Lab CA")
    return ca, k, raw_crl(ca, k, [3, 2**159 + 5, 2**64 + 3])


# ---------------------------------------------------------------- the index

LOW_COLLIDING = st.builds(
    lambda low, high: (high << 64) | low,
    st.sampled_from([0, 1, 7, 2**63, 2**64 - 1]),
    st.integers(0, 2**96 - 1),
)
SERIAL = st.one_of(
    st.integers(0, 255), st.integers(0, 2**64 - 1), st.integers(0, 2**160 - 1), LOW_COLLIDING
)


@SETTINGS
@given(serials=st.lists(SERIAL, max_size=60), probes=st.lists(SERIAL, max_size=30))
def test_index_membership_equals_set_membership(serials, probes):
    serials = serials + serials[: len(serials) // 3]  # duplicates
    blob = crl_index.build(serials)
    index = CrlIndex(blob, check_order=True)
    members = set(serials)
    assert len(index) == len(members)
    assert len(blob) == crl_index.size(len(members))
    near = [s + d for s in serials for d in (-1, 1, 1 << 64, -(1 << 64))]
    for s in [*serials, *probes, *near, -1, 2**160, 2**160 + 3]:
        assert (s in index) == (s in members), s


@SETTINGS
@given(serials=st.lists(st.integers(0, 2**64 - 1), max_size=40), probes=st.lists(SERIAL))
def test_index_from_numpy_arrays(serials, probes):
    import numpy as np

    a = CrlIndex(crl_index.build(np.array(serials, dtype=np.uint64)), check_order=True)
    rows = np.frombuffer(b"".join(s.to_bytes(20, "little") for s in serials), np.uint8)
    b = CrlIndex(crl_index.build(rows.reshape(-1, 20)), check_order=True)
    for s in serials + probes:
        assert (s in a) == (s in b) == (s in set(serials))


def test_index_refuses_out_of_range_serials():
    for bad in ([-1], [2**160], [1, "x"]):
        with pytest.raises(ValueError):
            crl_index.build(bad)


def test_index_is_zero_copy_and_empty_is_fine():
    blob = crl_index.build([5, 6])
    view = memoryview(blob)
    index = CrlIndex(view[:])
    assert 5 in index and 4 not in index and "5" not in index
    assert index._lows.obj is blob  # the lows are a view of the blob, not a copy
    empty = CrlIndex(crl_index.build([]))
    assert len(empty) == 0 and 0 not in empty


@SETTINGS
@given(data=st.binary(max_size=200), serials=st.lists(SERIAL, min_size=1, max_size=8))
def test_index_bad_blobs_raise_value_error(data, serials):
    good = crl_index.build(serials)
    n = len(set(serials))
    bad = [
        data if not data.startswith(b"CRLX") else b"XXXX" + data,
        good[:-1],
        good + b"\0",
        good[: len(good) // 2],
        b"CRLY" + good[4:],
        good[:4] + struct.pack("<H", 2) + good[6:],
        good[:6] + b"\1" + good[7:],  # bucket bits
        good[:7] + b"\x41" + good[8:],  # shift
        good[:8] + struct.pack("<Q", n + 1) + good[16:],
        good[:8] + struct.pack("<Q", 2**63) + good[16:],
    ]
    for blob in bad:
        with pytest.raises(ValueError):
            CrlIndex(blob)


def test_index_check_order_catches_unsorted_or_duplicate_entries():
    blob = crl_index.build([1, 2, 3])
    at = len(blob) - 20 * 3  # the lows
    assert blob[at : at + 24] == struct.pack("<3Q", 1, 2, 3)
    unsorted = blob[:at] + struct.pack("<3Q", 2, 1, 3) + blob[at + 24 :]
    dup = blob[:at] + struct.pack("<3Q", 1, 1, 3) + blob[at + 24 :]  # same mid and top
    for bad in (unsorted, dup):
        CrlIndex(bad)  # header and sizes are fine
        with pytest.raises(ValueError, match="out of order"):
            CrlIndex(bad, check_order=True)


def test_index_buckets_fit_sequential_and_random_serials():
    import random

    rng = random.Random(3)
    for serials in (list(range(10**6, 10**6 + 5000)), [rng.getrandbits(128) for _ in range(5000)]):
        blob = crl_index.build(serials)
        index = CrlIndex(blob, check_order=True)
        bits = crl_index.bucket_bits(5000)
        starts = struct.unpack_from(f"<{2**bits + 1}I", blob, crl_index.HEADER.size)
        assert max(b - a for a, b in zip(starts, starts[1:], strict=False)) < 64  # ~16 each
        assert all(s in index for s in serials[:500]) and serials[0] - 1 not in index
        assert serials[-1] + 2**64 not in index and 2**200 not in index


def test_index_bucket_table_is_checked():
    serials = [i << 58 for i in range(64)]  # spread over the buckets
    blob = crl_index.build(serials)
    bits = crl_index.bucket_bits(64)
    assert bits == 3 and all(s in CrlIndex(blob, check_order=True) for s in serials)
    starts = list(struct.unpack_from(f"<{2**bits + 1}I", blob, crl_index.HEADER.size))
    assert starts == [0, 8, 16, 24, 32, 40, 48, 56, 64]

    def with_starts(values):
        h = crl_index.HEADER.size
        return blob[:h] + struct.pack(f"<{len(values)}I", *values) + blob[h + 4 * len(values) :]

    for bad in ([1, *starts[1:]], [*starts[:-1], 63], [0, 9, 8, *starts[3:]]):
        with pytest.raises(ValueError, match="bucket table"):
            CrlIndex(with_starts(bad))
    shifted = with_starts([0, 7, 16, 24, 32, 40, 48, 56, 64])  # entry 7 in the wrong bucket
    CrlIndex(shifted)
    with pytest.raises(ValueError, match="foreign entries"):
        CrlIndex(shifted, check_order=True)


def test_index_lookup_in_a_large_index():
    """Members and non-members of a 200,000-entry index (speed: bench_crl.py)."""
    import random

    rng = random.Random(7)
    serials = [rng.getrandbits(128) for _ in range(200_000)]
    index = CrlIndex(crl_index.build(serials))
    members, strangers = serials[:2000], [rng.getrandbits(128) | 1 << 130 for _ in range(2000)]
    assert all(s in index for s in members) and not any(s in index for s in strangers)
    assert len(index) == len(set(serials))


# ---------------------------------------------------------------- verify_and_index


def test_verify_and_index_der_and_pem():
    ca, k, crl = lab()
    for body, enc in [(crl, "der"), (crl, None), (pem_of(crl), "pem"), (pem_of(crl), None)]:
        meta = verify_and_index(body, enc, [ca], T0)
        index = CrlIndex(meta.pop("index"), check_order=True)
        assert {3, 2**159 + 5, 2**64 + 3} == {
            s for s in (3, 2**159 + 5, 2**64 + 3, 4, 2**64) if s in index
        }
        cert = x509.load_der_x509_certificate(ca)
        assert meta == {
            "issuer": cert.subject.public_bytes(),
            "issuer_key_sha1": meta["issuer_key_sha1"],
            "issuer_text": cert.subject.rfc4514_string(),
            "this_update": T0 - 60,
            "next_update": T0 + DAY,
            "number": None,
            "count": 3,
            "scope": "all",
        }


def pem_of(der: bytes) -> bytes:
    return x509.load_der_x509_crl(der).public_bytes(PEM)


def test_issuer_key_sha1_is_the_ocsp_issuer_key_hash():
    ca, k, crl = lab()
    leaf_key = key("leaf")
    cert = x509.load_der_x509_certificate(ca)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name("leaf"))
        .issuer_name(cert.subject)
        .public_key(leaf_key.public_key())
        .serial_number(3)
        .not_valid_before(when(T0 - DAY))
        .not_valid_after(when(T0 + DAY))
        .sign(k, hashes.SHA256())
    )
    req = ocsp.OCSPRequestBuilder().add_certificate(leaf, cert, hashes.SHA1()).build()
    assert verify_and_index(crl, None, [ca], T0)["issuer_key_sha1"] == req.issuer_key_hash


@pytest.mark.parametrize("kind", ["rsa", "ed25519", "rsa-pss"])
def test_other_signature_algorithms(kind):
    k = key("algo-" + kind, "rsa" if kind == "rsa-pss" else kind)
    ca, _ = make_ca("Algo CA " + kind, k)
    if kind == "rsa-pss":
        cert = x509.load_der_x509_certificate(ca)
        pss = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
        b = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(cert.subject)
            .last_update(when(T0 - 60))
            .next_update(when(T0 + DAY))
        )
        crl = b.sign(k, hashes.SHA256(), rsa_padding=pss).public_bytes(DER)
    else:
        crl = make_crl(ca, k, [1, 2])
    assert verify_and_index(crl, "der", [ca], T0)["issuer"]


def test_issuer_selection_by_name_and_key_identifier():
    old, old_key = make_ca("Rolled CA", key("rolled-1"))
    new, new_key = make_ca("Rolled CA", key("rolled-2"))
    other, _ = make_ca("Other CA")
    crl = make_crl(new, new_key, [9])
    meta = verify_and_index(crl, None, [other, old, new], T0)
    assert meta["issuer_key_sha1"] == key_sha1(new)
    # Without an AKI in the CRL, every same-named certificate is tried.
    crl = make_crl(old, old_key, [9], aki=False)
    assert verify_and_index(crl, None, [new, old], T0)["issuer_key_sha1"] == key_sha1(old)
    # A certificate without SKI is matched by its key.
    bare, bare_key = make_ca("Bare CA", ski=False)
    assert verify_and_index(make_crl(bare, bare_key, [1]), None, [bare], T0)
    with pytest.raises(CrlError, match=r"^unknown issuer 'CN=Rolled CA' \(no certificate"):
        verify_and_index(make_crl(new, new_key, [9]), None, [old], T0)
    with pytest.raises(CrlError, match=r"^unknown issuer 'CN=Rolled CA'$"):
        verify_and_index(crl, None, [other, b"junk"], T0)


def key_sha1(ca_der: bytes) -> bytes:
    pub = x509.load_der_x509_certificate(ca_der).public_key()
    return x509.SubjectKeyIdentifier.from_public_key(pub).digest


def test_bad_signature_and_wrong_signer():
    ca, k, crl = lab()
    with pytest.raises(CrlError, match="^bad signature"):
        verify_and_index(make_crl(ca, k, [1], aki=False, signer=key("impostor")), None, [ca], T0)
    broken = bytearray(crl)
    broken[-5] ^= 1  # in the signature value
    with pytest.raises(CrlError, match="^bad signature"):
        verify_and_index(bytes(broken), None, [ca], T0)


def test_issuer_without_crl_sign_is_refused():
    ca, k = make_ca("No CRL CA", crl_sign=False)
    with pytest.raises(CrlError, match="keyUsage lacks cRLSign"):
        verify_and_index(make_crl(ca, k, [1]), None, [ca], T0)


def test_freshness():
    ca, k, _ = lab()
    with pytest.raises(CrlError, match=r"^stale: nextUpdate 2030-03-17T\S+ passed$"):
        verify_and_index(make_crl(ca, k, next=T0 - 1, this=T0 - DAY), None, [ca], T0)
    with pytest.raises(CrlError, match="^not yet valid: thisUpdate"):
        verify_and_index(make_crl(ca, k, this=T0 + 301), None, [ca], T0)
    assert verify_and_index(make_crl(ca, k, this=T0 + 299), None, [ca], T0)  # skew
    meta = verify_and_index(raw_crl(ca, k, [], next=None), None, [ca], T0)
    assert meta["next_update"] is None and meta["number"] is None and meta["count"] == 0


def idp(**kw):
    args = dict(full_name=None, relative_name=None, only_contains_user_certs=False,
                only_contains_ca_certs=False, only_some_reasons=None, indirect_crl=False,
                only_contains_attribute_certs=False)  # fmt: skip
    return x509.IssuingDistributionPoint(**{**args, **kw})


REFUSED = [
    ([(x509.DeltaCRLIndicator(4), True)], [], r"^delta CRL \(DeltaCRLIndicator\)"),
    ([(idp(indirect_crl=True), True)], [], r"^indirect CRL"),
    (
        [(idp(only_some_reasons=frozenset({x509.ReasonFlags.key_compromise})), True)],
        [],
        r"^partial CRL \(IssuingDistributionPoint onlySomeReasons\)",
    ),
    ([(idp(only_contains_attribute_certs=True), True)], [], "onlyContainsAttributeCerts"),
    (
        [(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4"), b"\x05\x00"), True)],
        [],
        r"^unknown critical CRL extension 1\.2\.3\.4$",
    ),
    (
        [],
        [(x509.CertificateIssuer([x509.DNSName("other.example")]), True)],
        r"^critical entry extension certificateIssuer \(indirect CRL\) on revoked serial 0x",
    ),
    (
        [],
        [(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.5"), b"\x05\x00"), True)],
        r"^critical entry extension 1\.2\.3\.5 on revoked serial 0x",
    ),
]


@pytest.mark.parametrize("extensions, entry_extensions, error", REFUSED)
def test_refused_crls_name_why(extensions, entry_extensions, error):
    ca, k, _ = lab()
    crl = make_crl(ca, k, [1, 2], extensions=extensions, entry_extensions=entry_extensions)
    with pytest.raises(CrlError, match=error):
        verify_and_index(crl, None, [ca], T0)


def test_accepted_extensions():
    ca, k, _ = lab()
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4"), b"\x05\x00")
    for extensions, scope in [
        ([(idp(only_contains_user_certs=True), True)], "user"),
        ([(idp(only_contains_ca_certs=True), True)], "ca"),
        ([(unknown, False)], "all"),
    ]:
        crl = make_crl(ca, k, [1], extensions=extensions, entry_extensions=[(unknown, False)])
        assert verify_and_index(crl, None, [ca], T0)["scope"] == scope


def test_bad_input_names_the_cause():
    ca, k, crl = lab()
    pem = pem_of(crl)
    cases = [
        (b"", None, "^not a CRL: empty"),
        (b"\x30\x03\x02\x01\x01", None, "^not a CRL"),
        (ca, None, "^not a CRL"),
        (pem, "der", "^not a DER CRL: the file is PEM"),
        (crl, "pem", "^bad PEM: no -----BEGIN"),
        (x509.load_der_x509_certificate(ca).public_bytes(PEM), "pem", "^bad PEM: no X509 CRL"),
        (pem.replace(b"M", b"*", 1), "pem", "^bad PEM: invalid base64"),
        (b"-----BEGIN X509 CRL-----\n-----END X509 CRL-----\n", None, "^bad PEM: empty"),
        (crl, "xml", "^unknown encoding"),
    ]
    for body, enc, error in cases:
        with pytest.raises(CrlError, match=error):
            verify_and_index(body, enc, [ca], T0)


def test_serial_range():
    ca, k, _ = lab()
    meta = verify_and_index(raw_crl(ca, k, [0, 1, 255, 2**160 - 1]), None, [ca], T0)
    index = CrlIndex(meta["index"], check_order=True)
    assert all(s in index for s in [0, 1, 255, 2**160 - 1]) and 2 not in index
    with pytest.raises(CrlError, match="^revoked serial out of range: negative"):
        verify_and_index(raw_crl(ca, k, [1, -5]), None, [ca], T0)
    with pytest.raises(CrlError, match="^revoked serial out of range: over 20 octets"):
        verify_and_index(raw_crl(ca, k, [1, 2**160]), None, [ca], T0)
    with pytest.raises(CrlError, match="^revoked serial out of range: over 20 octets"):
        verify_and_index(raw_crl(ca, k, [2**1100]), None, [ca], T0)  # a long-form length


def test_entry_extensions_agree_with_cryptography():
    """A reasonCode on every entry; the serials read from the DER equal cryptography's."""
    ca, k, _ = lab()
    serials = [1, 2**64 - 1, 2**100 + 7, 2**158, 300]
    reason = [(x509.CRLReason(x509.ReasonFlags.key_compromise), False)]
    crl = make_crl(ca, k, serials, entry_extensions=reason)
    index = CrlIndex(verify_and_index(crl, None, [ca], T0)["index"], check_order=True)
    assert sorted(r.serial_number for r in x509.load_der_x509_crl(crl)) == sorted(serials)
    assert all(s in index for s in serials)


def test_algorithm_identifiers_must_match():
    """RFC 5280 5.1.1.2: the outer signatureAlgorithm equals the TBS signature field."""
    ca, k = make_ca("RSA CA", key("rsa-ca", "rsa"))
    crl = make_crl(ca, k, [1])
    sha256_rsa = bytes.fromhex("300d06092a864886f70d01010b0500")
    sha384_rsa = bytes.fromhex("300d06092a864886f70d01010c0500")
    last = crl.rindex(sha256_rsa)  # the outer one comes after the TBS
    swapped = crl[:last] + sha384_rsa + crl[last + len(sha256_rsa) :]
    with pytest.raises(CrlError):
        verify_and_index(swapped, None, [ca], T0)


def test_unused_bits_in_the_signature_are_refused():
    ca, k, crl = lab()
    c = x509.load_der_x509_crl(crl)
    sig = c.signature
    at = crl.rindex(b"\x00" + sig)
    padded = crl[:at] + b"\x01" + crl[at + 1 :]  # same bytes, "one unused bit"
    if not sig[-1] & 1:  # cryptography refuses a BIT STRING whose padding bit is set
        with pytest.raises(CrlError):
            verify_and_index(padded, None, [ca], T0)


def test_large_crl_with_collisions_round_trips():
    ca, k, _ = lab()
    serials = [i << 64 | 42 for i in range(1, 40)] + list(range(100, 400))
    meta = verify_and_index(make_crl(ca, k, serials), None, [ca], T0)
    index = CrlIndex(meta["index"], check_order=True)
    assert all(s in index for s in serials)
    assert 42 not in index and (40 << 64 | 42) not in index and meta["count"] == len(serials)


@functools.cache
def fuzz_seed():
    ca, k = make_ca("Fuzz CA", key("fuzz", "rsa"))
    crl = make_crl(
        ca,
        k,
        [1, 2**100, 2**158],
        entry_extensions=[(x509.CRLReason(x509.ReasonFlags.superseded), False)],
        extensions=[(idp(only_contains_user_certs=True), True)],
    )
    return ca, crl


@SETTINGS
@given(data=st.binary(max_size=400))
def test_fuzz_random_bytes(data):
    ca, _ = fuzz_seed()
    for enc in (None, "der", "pem"):
        with pytest.raises(CrlError):
            verify_and_index(data, enc, [ca], T0)
    with pytest.raises(CrlError):
        verify_and_index(b"-----BEGIN X509 CRL-----\n" + data + b"\n-----END X509 CRL-----", None, [ca], T0)  # fmt: skip


@SETTINGS
@given(st.data())
def test_fuzz_a_mutated_signed_crl_never_verifies(data):
    ca, crl = fuzz_seed()
    at = data.draw(st.integers(0, len(crl) - 1))
    how = data.draw(st.sampled_from(["flip", "set", "delete", "insert", "truncate"]))
    if how == "flip":
        mutated = crl[:at] + bytes([crl[at] ^ data.draw(st.integers(1, 255))]) + crl[at + 1 :]
    elif how == "set":
        mutated = crl[:at] + bytes([data.draw(st.integers(0, 255))]) + crl[at + 1 :]
    elif how == "delete":
        mutated = crl[:at] + crl[at + 1 :]
    elif how == "insert":
        mutated = crl[:at] + bytes([data.draw(st.integers(0, 255))]) + crl[at:]
    else:
        mutated = crl[:at]
    if mutated == crl:
        return
    with pytest.raises(CrlError):
        verify_and_index(mutated, None, [ca], T0)


ENTRY = st.tuples(
    st.one_of(st.integers(0, 2**64), st.integers(-(2**170), 2**170)),
    st.booleans(),  # UTCTime or GeneralizedTime
    st.lists(
        st.tuples(
            st.sampled_from(["2.5.29.21", "2.5.29.24", "2.5.29.29", "1.2.3.4"]),
            st.booleans(),  # critical
            st.binary(max_size=6),
        ),
        max_size=2,
    ),
)


@SETTINGS
@given(entries=st.lists(ENTRY, max_size=12))
def test_fuzz_signed_crls_with_odd_entries(entries):
    """Signed CRLs with any serials, time types and entry extensions: the result is an index
    of exactly cryptography's serials, or a CrlError when one is out of range or critical."""
    ca, k, _ = lab()
    der_entries = []
    for serial, utc_time, exts in entries:
        date = utc(T0 - 60) if utc_time else tlv(0x18, b"20300317000000Z")
        ext_der = [seq(oid(o), b"\x01\x01\xff" if c else b"", tlv(4, v)) for o, c, v in exts]
        der_entries.append(seq(integer(serial), date, *([seq(*ext_der)] if ext_der else [])))
    body = raw_crl(ca, k, [], entries=der_entries)
    try:
        parsed = sorted(r.serial_number for r in x509.load_der_x509_crl(body))
    except ValueError:
        parsed = None  # cryptography refuses it: so must we
    fine = parsed is not None and all(0 <= s < 2**160 for s in parsed)
    fine = fine and not any(c for _, _, exts in entries for _, c, _ in exts)
    if not fine:
        with pytest.raises(CrlError):
            verify_and_index(body, None, [ca], T0)
        return
    meta = verify_and_index(body, None, [ca], T0)
    index = CrlIndex(meta["index"], check_order=True)
    assert meta["count"] == len(parsed) and len(index) == len(set(parsed))
    assert all(s in index for s in parsed)


def test_the_seed_verifies():
    ca, crl = fuzz_seed()
    assert verify_and_index(crl, None, [ca], T0)["count"] == 3


# ---------------------------------------------------------------- CrlCache (sans-IO)


class Net:
    """A fake fetch: url -> body or exception; optionally held at a gate."""

    def __init__(self) -> None:
        self.bodies: dict[str, bytes | Exception] = {}
        self.calls: list[tuple[str, int, float]] = []
        self.gate: asyncio.Event | None = None

    async def fetch(self, url: str, *, limit: int, timeout: float) -> bytes:
        self.calls.append((url, limit, timeout))
        if self.gate is not None:
            await asyncio.wait_for(self.gate.wait(), 5)
        body = self.bodies.get(url, FetchError(f"fetch {url}: not found (HTTP 404 Not Found)"))
        if isinstance(body, Exception):
            raise body
        if len(body) > limit:
            raise FetchError(f"fetch {url}: file exceeds {limit} bytes")
        return body


class Rig:
    def __init__(self, **kw) -> None:
        self.t = T0
        self.net = Net()
        self.worker_calls = 0
        self.updates: list[tuple[str, int]] = []
        self.cache = CrlCache(self.net.fetch, self.worker, lambda: self.t, self.on_update, **kw)

    async def worker(self, fn, *args):
        self.worker_calls += 1
        return fn(*args)

    def on_update(self, entry: Entry) -> None:
        self.updates.append((entry.key, entry.version))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


URL = "http://ca.example/ca.crl"


def test_configured_crl_is_fetched_at_once():
    ca, k, crl = lab()

    async def scenario():
        rig = Rig()
        rig.net.bodies[URL] = crl
        task = rig.cache.configure("ca1", URL, "der", [ca])
        await task
        e = rig.cache.get("ca1")
        assert (e.name, e.url, e.version, e.last_result, e.last_fetch) == ("ca1", URL, 1, "ok", T0)
        assert e.meta["count"] == 3 and "index" not in e.meta and 3 in CrlIndex(e.index)
        assert e.error(rig.t) is None and e.next_refresh == T0 + 3600  # before nextUpdate
        assert rig.updates == [("ca1", 1)]
        assert rig.net.calls == [(URL, CRL_LIMIT, 30.0)]
        assert rig.cache.entries() == [e]
        # Configuring it again unchanged fetches nothing (a shorter period takes effect);
        # removing it forgets it.
        assert rig.cache.configure("ca1", URL, "der", [ca]) is None
        assert rig.cache.configure("ca1", URL, "der", [ca], refresh_s=60) is None
        assert e.refresh_s == 60 and e.next_refresh == T0 + 60 and len(rig.net.calls) == 1
        assert rig.cache.remove("ca1") is e and rig.cache.entries() == []
        # Added again: its versions go on from where they were, so no card confuses them.
        await rig.cache.configure("ca1", URL, "der", [ca])
        assert rig.cache.get("ca1").version == 2 and rig.updates == [("ca1", 1), ("ca1", 2)]
        # A URL learned from a CDP and then configured is one entry, the configured one.
        rig.net.bodies[URL + "x"] = crl
        await rig.cache.need(URL + "x", [ca])
        await rig.cache.configure("ca2", URL + "x", "der", [ca])
        assert [e.key for e in rig.cache.entries()] == ["ca1", "ca2"]
        assert rig.cache.lookup_url(URL + "x") is rig.cache.get("ca2")

    run(scenario())


def test_concurrent_needs_share_one_fetch():
    ca, k, crl = lab()

    async def scenario():
        rig = Rig()
        rig.net.bodies[URL] = crl
        rig.net.gate = asyncio.Event()
        needs = [asyncio.create_task(rig.cache.need(URL, [ca])) for _ in range(10)]
        await asyncio.sleep(0.01)
        assert len(rig.net.calls) == 1
        rig.net.gate.set()
        entries = await asyncio.gather(*needs)
        assert all(e is entries[0] for e in entries) and entries[0].name is None
        assert rig.worker_calls == 1 and rig.updates == [(URL, 1)]
        # Usable now: a further need fetches nothing.
        assert await rig.cache.need(URL, [ca]) is entries[0]
        assert len(rig.net.calls) == 1

    run(scenario())


def test_a_failed_url_backs_off():
    ca, k, crl = lab()

    async def scenario():
        rig = Rig(backoff_s=30)
        e = await rig.cache.need(URL, [ca])
        assert e.error(rig.t) == e.last_result == f"fetch {URL}: not found (HTTP 404 Not Found)"
        assert e.index is None and e.next_refresh == T0 + 30
        rig.net.bodies[URL] = crl
        rig.t += 29
        assert (await rig.cache.need(URL, [ca])).error(rig.t) is not None  # cached failure
        assert len(rig.net.calls) == 1 and rig.cache.due(rig.t) == []
        rig.t += 1
        assert rig.cache.due(rig.t) == [e]
        assert (await rig.cache.need(URL, [ca])).error(rig.t) is None
        assert len(rig.net.calls) == 2 and e.version == 1

    run(scenario())


def test_refresh_at_next_update_or_refresh_period():
    ca, k, _ = lab()
    first = make_crl(ca, k, [1], next=T0 + 100, number=1)
    second = make_crl(ca, k, [1, 2], next=T0 + 10_000, number=2, this=T0 + 50)

    async def scenario():
        rig = Rig(default_refresh_s=3600)
        rig.net.bodies[URL] = first
        await rig.cache.configure("ca1", URL, None, [ca])
        e = rig.cache.get("ca1")
        assert e.next_refresh == T0 + 100 and rig.cache.next_wakeup() == T0 + 100
        rig.t = T0 + 99
        assert rig.cache.due(rig.t) == [] and await rig.cache.refresh_due() == []
        rig.t = T0 + 100
        rig.net.bodies[URL] = second
        assert await rig.cache.refresh_due() == [e]
        assert e.version == 2 and 2 in CrlIndex(e.index) and e.meta["number"] == 2
        assert e.next_refresh == T0 + 100 + 3600  # the refresh period comes first now
        assert rig.updates == [("ca1", 1), ("ca1", 2)]

    run(scenario())


def test_failed_refresh_keeps_the_good_crl_until_next_update():
    ca, k, _ = lab()
    good = make_crl(ca, k, [7], next=T0 + 1000)
    newer = make_crl(ca, k, [7, 8], next=T0 + 5000, number=2, this=T0 + 1100)

    async def scenario():
        rig = Rig(backoff_s=60, default_refresh_s=500)
        rig.net.bodies[URL] = good
        await rig.cache.configure("ca1", URL, "der", [ca])
        e = rig.cache.get("ca1")
        index = e.index
        for bad in [b"garbage", FetchError(f"fetch {URL}: timed out after 30 s"),
                    make_crl(ca, k, [7], signer=key("impostor"), aki=False)]:  # fmt: skip
            rig.net.bodies[URL] = bad
            rig.t = max(rig.t, e.next_refresh)
            await rig.cache.refresh_due()
            assert e.version == 1 and e.index is index and e.error(rig.t) is None
            assert e.last_result != "ok" and e.next_refresh == rig.t + 60
        assert e.last_result.startswith("bad signature")
        rig.t = T0 + 1000  # nextUpdate passed: fail closed
        assert e.error(rig.t).startswith("stale: nextUpdate 2030-03-17T")
        assert "(last fetch: bad signature" in e.error(rig.t)
        assert (await rig.cache.need(URL, [ca])) is e  # in backoff: at once, still stale
        rig.t = e.next_refresh
        rig.net.bodies[URL] = newer
        assert await rig.cache.refresh_due() == [e]
        assert e.version == 2 and e.error(rig.t) is None and 8 in CrlIndex(e.index)

    run(scenario())


def test_unchanged_body_and_older_crl():
    ca, k, _ = lab()
    v2 = make_crl(ca, k, [1], number=2, next=T0 + 50)
    v1 = make_crl(ca, k, [1, 2], number=1)

    async def scenario():
        rig = Rig(backoff_s=10, default_refresh_s=20)
        rig.net.bodies[URL] = v2
        await rig.cache.configure("ca1", URL, "der", [ca])
        e = rig.cache.get("ca1")
        rig.t += 20
        await rig.cache.refresh_due()
        assert (e.version, rig.worker_calls, e.last_result) == (1, 1, "ok")  # same bytes
        rig.t += 20
        rig.net.bodies[URL] = v1
        await rig.cache.refresh_due()
        assert e.version == 1 and e.meta["number"] == 2
        assert e.last_result == "older CRL refused: number 1 < cached 2"
        rig.t = T0 + 50  # the server still has the old CRL past its nextUpdate
        rig.net.bodies[URL] = v2
        await rig.cache.refresh_due()
        assert e.last_result.startswith("stale: nextUpdate") and e.error(rig.t)
        assert e.next_refresh == rig.t + 10

    run(scenario())


def test_remove_or_reconfigure_while_fetching():
    ca, k, crl = lab()

    async def scenario():
        rig = Rig()
        rig.net.bodies[URL] = rig.net.bodies[URL + "2"] = crl
        rig.net.gate = asyncio.Event()
        first = rig.cache.configure("ca1", URL, "der", [ca])
        await asyncio.sleep(0)
        rig.cache.remove("ca1")
        second = rig.cache.configure("ca2", URL, "der", [ca])
        await asyncio.sleep(0)
        third = rig.cache.configure("ca2", URL + "2", "der", [ca])  # replaces the entry
        rig.net.gate.set()
        await asyncio.gather(first, second, third)
        assert [e.url for e in rig.cache.entries()] == [URL + "2"]
        assert rig.cache.get("ca2").version == 1 and rig.updates == [("ca2", 1)]

    run(scenario())


def test_worker_crash_is_an_error_not_a_crash():
    ca, k, crl = lab()

    async def scenario():
        rig = Rig()
        rig.net.bodies[URL] = crl

        async def broken(fn, *args):
            raise RuntimeError("process pool is broken")

        rig.cache._run_worker = broken
        e = await rig.cache.need(URL, [ca])
        assert e.last_result == "internal error: RuntimeError: process pool is broken"
        assert e.error(rig.t) == e.last_result and e.version == 0

    run(scenario())


def test_limit_and_timeout_reach_the_fetcher():
    ca, k, crl = lab()

    async def scenario():
        rig = Rig(limit=100, fetch_timeout_s=2.5)
        rig.net.bodies[URL] = crl
        e = await rig.cache.need(URL, [ca])
        assert rig.net.calls == [(URL, 100, 2.5)]
        assert e.last_result == f"fetch {URL}: file exceeds 100 bytes"

    run(scenario())


def test_need_learns_more_issuers_for_a_url():
    ca, k, crl = lab()
    other, _ = make_ca("Other CA")

    async def scenario():
        rig = Rig()
        rig.net.bodies[URL] = crl
        e = await rig.cache.need(URL, [other])
        assert e.last_result == "unknown issuer 'CN=Lab CA'"
        assert (await rig.cache.need(URL, [ca])).error(rig.t) is None  # no backoff wait
        assert e.issuers == [other, ca]

    run(scenario())


def test_run_loop_refreshes():
    ca, k, _ = lab()

    async def scenario():
        rig = Rig(default_refresh_s=100)
        rig.net.bodies[URL] = make_crl(ca, k, [1], number=1)
        rig.cache.configure("ca1", URL, "der", [ca])
        loop = asyncio.create_task(rig.cache.run(poll_s=0.05))
        e = rig.cache.get("ca1")
        await wait_for(lambda: e.version == 1)
        rig.net.bodies[URL] = make_crl(ca, k, [1, 2], number=2)
        rig.t += 100
        await wait_for(lambda: e.version == 2)
        loop.cancel()
        await rig.cache.close()

    run(scenario())


async def wait_for(predicate, timeout: float = 5.0):
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def test_real_process_pool_runs_verify_and_index():
    from supervisor.workers import Workers

    ca, k, crl = lab()

    async def scenario():
        workers = Workers()
        try:
            rig = Rig()
            rig.cache._run_worker = workers.run
            rig.net.bodies[URL] = crl
            e = await asyncio.wait_for(rig.cache.need(URL, [ca]), 60)
            assert e.error(rig.t) is None and 2**159 + 5 in CrlIndex(e.index)
        finally:
            workers.close()

    asyncio.run(scenario())
