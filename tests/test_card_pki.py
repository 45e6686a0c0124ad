"""cards.pki: CERTREQ hashes, the chain the gateway sends, peer chain validation."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import ipaddress
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyasn1.codec.der import decoder as der_decoder
from pyasn1.codec.der import encoder as der_encoder
from pyasn1.type import univ
from pyasn1_alt_modules import rfc5280

from cards.pki import (
    MAX_CHAIN,
    ChainError,
    certreq_data,
    chain_to_send,
    identity_matches,
    parse_certreq,
    revocation_urls,
    spki_sha1,
    validate_peer,
)

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)  # the injected wall clock
DAY = dt.timedelta(days=1)


@functools.cache
def key(tag: str):
    if tag.startswith("ec"):
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def name(cn: str, string_type=None) -> x509.Name:
    attr = (
        x509.NameAttribute(NameOID.COMMON_NAME, cn, string_type)
        if string_type
        else x509.NameAttribute(NameOID.COMMON_NAME, cn)
    )
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Lab"), attr])


def make(
    cn: str,
    key_tag: str,
    issuer: tuple[x509.Certificate, object] | None = None,
    *,
    ca: bool = True,
    path_len: int | None = None,
    basic: bool = True,
    days: tuple[int, int] = (-30, 3650),
    extensions=(),
    subject: x509.Name | None = None,
    pss: bool = False,
) -> x509.Certificate:
    """A certificate for `cn`; self-signed unless `issuer` (certificate, key) is given."""
    own_key = key(key_tag)
    issuer_name, signer = (issuer[0].subject, issuer[1]) if issuer else (None, own_key)
    subject = subject or name(cn)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name or subject)
        .public_key(own_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + days[0] * DAY)
        .not_valid_after(NOW + days[1] * DAY)
    )
    if basic:
        builder = builder.add_extension(x509.BasicConstraints(ca, path_len), critical=True)
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    extra = {}
    if pss:
        extra["rsa_padding"] = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
    return builder.sign(signer, hashes.SHA256(), **extra)


def der(*certs: x509.Certificate) -> list[bytes]:
    return [c.public_bytes(serialization.Encoding.DER) for c in certs]


SAN = x509.SubjectAlternativeName(
    [
        x509.DNSName("SeGW.example.net"),
        x509.RFC822Name("ike@Example.NET"),
        x509.IPAddress(ipaddress.ip_address("192.0.2.1")),
        x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
    ]
)


@pytest.fixture(scope="module")
def pki():
    """root (RSA) -PSS-> int1 (EC) -ECDSA-> int2 (RSA) -PKCS#1 v1.5-> leaf (EC)."""
    root = make("Root CA", "rsa-root")
    int1 = make("Int1 CA", "ec-int1", (root, key("rsa-root")), pss=True)
    int2 = make("Int2 CA", "rsa-int2", (int1, key("ec-int1")))
    leaf = make(
        "segw.example.net", "ec-leaf", (int2, key("rsa-int2")), ca=False, extensions=[(SAN, False)]
    )
    return {"root": root, "int1": int1, "int2": int2, "leaf": leaf}


def deep(depth: int) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """A root and a chain of `depth` certificates below it (leaf first), mixed key types."""
    root = make("Deep Root", "rsa-root")
    issuer = (root, key("rsa-root"))
    cas = []
    for i in range(depth - 1):
        tag = ("ec-deep", "rsa-deep")[i % 2] + str(i)
        cas.append(make(f"Deep CA {i}", tag, issuer, pss=issuer[1] is key("rsa-root")))
        issuer = (cas[-1], key(tag))
    leaf = make("deep.example.net", "ec-leaf", issuer, ca=False)
    return root, [leaf, *reversed(cas)]


# -- validate_peer: accepted paths ------------------------------------------------------


def test_validates_to_root(pki):
    result = validate_peer(der(pki["leaf"], pki["int2"], pki["int1"]), [pki["root"]], NOW)
    assert result.leaf == pki["leaf"]
    assert result.path == (pki["leaf"], pki["int2"], pki["int1"])
    assert result.anchor == pki["root"]


def test_intermediate_anchor_stops_there(pki):
    certs = der(pki["leaf"], pki["int2"], pki["int1"], pki["root"])
    for anchors in ([pki["int1"]], [pki["root"], pki["int1"]]):
        result = validate_peer(certs, anchors, NOW)
        assert result.path == (pki["leaf"], pki["int2"])
        assert result.anchor == pki["int1"]


def test_payload_order_after_the_leaf_is_free(pki):
    result = validate_peer(der(pki["leaf"], pki["int1"], pki["int2"]), [pki["root"]], NOW)
    assert result.path == (pki["leaf"], pki["int2"], pki["int1"])


def test_unrelated_extra_payloads_are_ignored(pki):
    stray = make("Stray CA", "ec-stray")
    result = validate_peer(der(pki["leaf"], stray, pki["int1"], pki["int2"]), [pki["root"]], NOW)
    assert result.path == (pki["leaf"], pki["int2"], pki["int1"])


def test_naive_now_is_utc(pki):
    naive = NOW.replace(tzinfo=None)
    assert validate_peer(der(pki["leaf"], pki["int2"]), [pki["int1"]], naive).anchor == pki["int1"]


def test_chain_of_four_accepted_five_refused():
    root, chain = deep(MAX_CHAIN)
    assert len(validate_peer(der(*chain), [root], NOW).path) == 4
    root, chain = deep(MAX_CHAIN + 1)
    with pytest.raises(ChainError, match="^chain of 5 certificates exceeds the maximum of 4$"):
        validate_peer(der(*chain), [root], NOW)
    # ... unless the anchor is lower down, or the limit is raised.
    assert len(validate_peer(der(*chain), [chain[-1]], NOW).path) == 4
    assert len(validate_peer(der(*chain), [root], NOW, max_chain=5).path) == 5


# -- validate_peer: refusals ------------------------------------------------------------


def test_missing_intermediate_names_the_issuer(pki):
    with pytest.raises(ChainError, match="issuer 'CN=Int2 CA,O=Lab' of 'CN=segw.example.net"):
        validate_peer(der(pki["leaf"], pki["int1"]), [pki["root"]], NOW)


def test_no_anchor_reached(pki):
    other = make("Other Root", "rsa-other")
    with pytest.raises(ChainError, match="Root CA"):
        validate_peer(der(pki["leaf"], pki["int2"], pki["int1"]), [other], NOW)


def test_expired_intermediate(pki):
    int2 = make("Old Int2", "rsa-int2", (pki["int1"], key("ec-int1")), days=(-400, -1))
    leaf = make("segw.example.net", "ec-leaf", (int2, key("rsa-int2")), ca=False)
    with pytest.raises(ChainError, match="certificate 'CN=Old Int2,O=Lab' expired at"):
        validate_peer(der(leaf, int2), [pki["int1"]], NOW)


def test_not_yet_valid_leaf(pki):
    leaf = make(
        "early.example.net", "ec-leaf", (pki["int2"], key("rsa-int2")), ca=False, days=(1, 9)
    )
    with pytest.raises(ChainError, match="'CN=early.example.net,O=Lab' is not valid before"):
        validate_peer(der(leaf, pki["int2"]), [pki["int1"]], NOW)
    # The injected clock decides: warp it forward and the same chain passes.
    assert validate_peer(der(leaf, pki["int2"]), [pki["int1"]], NOW + 2 * DAY).leaf == leaf


def test_expired_anchor():
    root = make("Short Root", "rsa-root", days=(-400, -1))
    leaf = make("segw.example.net", "ec-leaf", (root, key("rsa-root")), ca=False)
    with pytest.raises(ChainError, match="CA certificate 'CN=Short Root,O=Lab' expired"):
        validate_peer(der(leaf), [root], NOW)


def v1_cert(cn: str, key_tag: str, issuer_tag: str | None = None, issuer=None) -> x509.Certificate:
    """An X.509 v1 certificate (no version field, no extensions), re-signed by hand.

    cryptography only builds v3; the signer must be RSA (PKCS#1 v1.5, as make() signs).
    """
    signer = key(issuer_tag or key_tag)
    made = make(cn, key_tag, (issuer, signer) if issuer else None)
    cert, _ = der_decoder.decode(der(made)[0], asn1Spec=rfc5280.Certificate())
    tbs = cert["tbsCertificate"]
    tbs["version"] = rfc5280.TBSCertificate()["version"]  # absent: v1
    tbs["extensions"] = rfc5280.TBSCertificate()["extensions"]
    signature = signer.sign(der_encoder.encode(tbs), padding.PKCS1v15(), hashes.SHA256())
    cert["signature"] = univ.BitString.fromOctetString(signature)
    return x509.load_der_x509_certificate(der_encoder.encode(cert))


def test_v1_anchor_accepted_but_not_a_v1_intermediate():
    root = v1_cert("V1 Root", "rsa-root")
    assert root.version == x509.Version.v1
    leaf = make("v1.example.net", "ec-leaf", (root, key("rsa-root")), ca=False)
    assert validate_peer(der(leaf), [root], NOW).anchor == root
    # A v1 certificate the peer sends as an intermediate cannot say it is a CA.
    v3_root = make("Root CA", "rsa-root")
    int1 = v1_cert("V1 Int", "rsa-v1int", "rsa-root", v3_root)
    leaf = make("v1.example.net", "ec-leaf", (int1, key("rsa-v1int")), ca=False)
    with pytest.raises(ChainError, match="issuer 'CN=V1 Int,O=Lab' is not a CA"):
        validate_peer(der(leaf, int1), [v3_root], NOW)


def test_issuer_without_ca_flag(pki):
    for basic in (True, False):  # cA=false, or no basicConstraints at all
        int2 = make("NotCA", "rsa-int2", (pki["int1"], key("ec-int1")), ca=False, basic=basic)
        leaf = make("segw.example.net", "ec-leaf", (int2, key("rsa-int2")), ca=False)
        with pytest.raises(ChainError, match="issuer 'CN=NotCA,O=Lab' is not a CA"):
            validate_peer(der(leaf, int2), [pki["int1"]], NOW)


def test_path_length_constraint():
    root = make("PL Root", "rsa-root", path_len=1)
    int1 = make("PL Int1", "ec-int1", (root, key("rsa-root")), path_len=0)
    int2 = make("PL Int2", "rsa-int2", (int1, key("ec-int1")))
    leaf = make("pl.example.net", "ec-leaf", (int2, key("rsa-int2")), ca=False)
    with pytest.raises(ChainError, match="pathLenConstraint 0 of 'CN=PL Int1,O=Lab'"):
        validate_peer(der(leaf, int2, int1), [root], NOW)
    # Within the limits: pathLen 0 directly above the leaf, 1 with one CA below.
    leaf1 = make("pl.example.net", "ec-leaf", (int1, key("ec-int1")), ca=False)
    assert validate_peer(der(leaf1, int1), [root], NOW).anchor == root
    # The root's own pathLen 1 is exceeded by two intermediates.
    free1 = make("PL Int1", "ec-int1", (root, key("rsa-root")))
    with pytest.raises(ChainError, match="pathLenConstraint 1 of 'CN=PL Root,O=Lab'"):
        validate_peer(der(leaf, int2, free1), [root], NOW)


def test_issuer_key_usage_needs_cert_sign(pki):
    usage = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
    int2 = make("NoSign", "rsa-int2", (pki["int1"], key("ec-int1")), extensions=[(usage, True)])
    leaf = make("segw.example.net", "ec-leaf", (int2, key("rsa-int2")), ca=False)
    with pytest.raises(ChainError, match="'CN=NoSign,O=Lab' keyUsage lacks keyCertSign"):
        validate_peer(der(leaf, int2), [pki["int1"]], NOW)


def test_leaf_must_not_be_a_ca(pki):
    with pytest.raises(ChainError, match="end-entity certificate 'CN=Int2 CA,O=Lab' is a CA"):
        validate_peer(der(pki["int2"], pki["int1"]), [pki["root"]], NOW)


@pytest.mark.parametrize("victim", ["leaf", "int2"])
def test_tampered_signature(pki, victim):
    certs = der(pki["leaf"], pki["int2"])
    index = ["leaf", "int2"].index(victim)
    body = bytearray(certs[index])
    body[-1] ^= 0x01  # the last byte belongs to the signature BIT STRING
    certs[index] = bytes(body)
    with pytest.raises(ChainError, match="does not verify"):
        validate_peer(certs, [pki["int1"]], NOW)


def test_unknown_critical_extension(pki):
    odd = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")
    leaf = make(
        "odd.example.net",
        "ec-leaf",
        (pki["int2"], key("rsa-int2")),
        ca=False,
        extensions=[(odd, True)],
    )
    with pytest.raises(ChainError, match="unsupported critical extension 1.3.6.1.4.1.99999.1"):
        validate_peer(der(leaf, pki["int2"]), [pki["int1"]], NOW)
    # The same extension marked non-critical is simply ignored.
    leaf = make(
        "odd.example.net",
        "ec-leaf",
        (pki["int2"], key("rsa-int2")),
        ca=False,
        extensions=[(odd, False)],
    )
    assert validate_peer(der(leaf, pki["int2"]), [pki["int1"]], NOW).leaf == leaf


def test_name_constraints_are_not_silently_ignored(pki):
    nc = x509.NameConstraints([x509.DNSName("example.org")], None)
    int2 = make("NC Int2", "rsa-int2", (pki["int1"], key("ec-int1")), extensions=[(nc, True)])
    leaf = make("segw.example.net", "ec-leaf", (int2, key("rsa-int2")), ca=False)
    with pytest.raises(ChainError, match="critical extension 2.5.29.30"):
        validate_peer(der(leaf, int2), [pki["int1"]], NOW)


def test_duplicate_payload(pki):
    with pytest.raises(ChainError, match="duplicate CERT payload: 'CN=Int2 CA,O=Lab'"):
        validate_peer(der(pki["leaf"], pki["int2"], pki["int2"], pki["int1"]), [pki["root"]], NOW)


def test_loop():
    # Two CAs cross-certify each other; neither leads to the anchor.
    a_self, b_self = make("Loop A", "ec-loopa"), make("Loop B", "rsa-loopb")
    a_by_b = make("Loop A", "ec-loopa", (b_self, key("rsa-loopb")))
    b_by_a = make("Loop B", "rsa-loopb", (a_self, key("ec-loopa")))
    leaf = make("loop.example.net", "ec-leaf", (a_by_b, key("ec-loopa")), ca=False)
    with pytest.raises(ChainError, match="loop"):
        validate_peer(der(leaf, a_by_b, b_by_a), [make("Root CA", "rsa-root")], NOW)


def test_garbage_and_empty(pki):
    with pytest.raises(ChainError, match="no CERT payload"):
        validate_peer([], [pki["root"]], NOW)
    with pytest.raises(ChainError, match="CERT payload 2 is not an X.509 certificate"):
        validate_peer([der(pki["leaf"])[0], b"\x30\x03\x02\x01\x00"], [pki["root"]], NOW)


@functools.cache
def _sample_ders() -> tuple[bytes, ...]:
    root = make("Root CA", "rsa-root")
    int1 = make("Int1 CA", "ec-int1", (root, key("rsa-root")))
    leaf = make(
        "fuzz.example.net", "ec-leaf", (int1, key("ec-int1")), ca=False, extensions=[(SAN, False)]
    )
    return tuple(der(leaf, int1, root))


@st.composite
def mutated_certs(draw) -> bytes:
    """A real certificate with a few bytes overwritten and maybe truncated."""
    body = bytearray(draw(st.sampled_from(_sample_ders())))
    for _ in range(draw(st.integers(0, 4))):
        body[draw(st.integers(0, len(body) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        body = body[: draw(st.integers(0, len(body)))]
    return bytes(body)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=300), mutated_certs()), max_size=5))
def test_fuzz_only_chain_error(certs):
    anchors = [x509.load_der_x509_certificate(_sample_ders()[2])]
    try:
        validate_peer(certs, anchors, NOW)
    except ChainError as exc:
        assert "\n" not in str(exc)


# -- CERTREQ and chain_to_send ----------------------------------------------------------


def test_spki_sha1_matches_public_key_encoding(pki):
    for cert in pki.values():
        spki = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        assert spki_sha1(cert) == hashlib.sha1(spki).digest()


def test_spki_sha1_hashes_the_bytes_in_the_certificate():
    # An RSA SubjectPublicKeyInfo without the NULL parameters: legal BER/DER, but any
    # re-encoding of the key adds the NULL and would hash differently from the peer.
    cert, _ = der_decoder.decode(
        der(make("No NULL", "rsa-nonull"))[0], asn1Spec=rfc5280.Certificate()
    )
    spki = cert["tbsCertificate"]["subjectPublicKeyInfo"]
    spki["algorithm"]["parameters"] = rfc5280.AlgorithmIdentifier()["parameters"]
    odd = x509.load_der_x509_certificate(der_encoder.encode(cert))
    raw = der_encoder.encode(spki)
    reencoded = odd.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert raw != reencoded
    assert spki_sha1(odd) == hashlib.sha1(raw).digest()


@pytest.mark.parametrize("which", ["root", "int1", "leaf"])  # OpenSSL is a required peer: no skip
def test_spki_sha1_matches_openssl(pki, which):
    pem = pki[which].public_bytes(serialization.Encoding.PEM)
    pub = subprocess.run(
        ["openssl", "x509", "-pubkey", "-noout"],
        input=pem,
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    spki = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "DER"],
        input=pub,
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    assert spki_sha1(pki[which]) == hashlib.sha1(spki).digest()


def test_certreq_data_round_trip(pki):
    data = certreq_data([pki["root"], pki["int1"]])
    assert data == spki_sha1(pki["root"]) + spki_sha1(pki["int1"])
    assert parse_certreq(data) == [spki_sha1(pki["root"]), spki_sha1(pki["int1"])]
    assert certreq_data([]) == b"" and parse_certreq(b"") == []
    with pytest.raises(ChainError, match="41 bytes is not a multiple of 20"):
        parse_certreq(data + b"\x00")


def test_chain_to_send(pki):
    leaf, int2, int1, root = pki["leaf"], pki["int2"], pki["int1"], pki["root"]
    configured = [int1, root, int2]  # any order; the root is never sent
    assert chain_to_send(leaf, configured, [], []) == [leaf, int2, int1]
    assert chain_to_send(leaf, configured, [spki_sha1(int1)], [root]) == [leaf, int2]
    assert chain_to_send(leaf, configured, [spki_sha1(root)], [root]) == [leaf, int2, int1]
    # Unknown hashes do not cut the chain, and neither does our own anchor list: it says
    # what we trust, not what the peer holds (test_ike_chaining, variant ca1+ca1_1).
    assert chain_to_send(leaf, configured, [b"\x00" * 20], []) == [leaf, int2, int1]
    assert chain_to_send(leaf, configured, [b"\x00" * 20], [int2]) == [leaf, int2, int1]
    assert chain_to_send(leaf, configured, [spki_sha1(root)], [int2, root]) == [leaf, int2, int1]
    # Without a CERTREQ everything but the root goes, whatever our anchors are.
    assert chain_to_send(leaf, configured, [], [int2, int1, root]) == [leaf, int2, int1]
    assert chain_to_send(leaf, [], [spki_sha1(root)], [root]) == [leaf]


def test_chain_to_send_enforces_max_chain():
    root, chain = deep(MAX_CHAIN + 1)
    with pytest.raises(ChainError, match="chain of 5 certificates exceeds the maximum of 4"):
        chain_to_send(chain[0], chain[:0:-1], [], [root])
    root, chain = deep(MAX_CHAIN)
    assert chain_to_send(chain[0], chain[1:], [spki_sha1(root)], [root]) == chain


# -- identity_matches and revocation_urls ----------------------------------------------

V4, V6 = ipaddress.ip_address("192.0.2.1").packed, ipaddress.ip_address("2001:db8::1").packed


@pytest.mark.parametrize(
    ("id_type", "id_data", "expected"),
    [
        (2, b"segw.example.net", True),
        (2, b"SEGW.EXAMPLE.NET", True),
        (2, b"other.example.net", False),
        (2, b"\xff\xfe", False),
        (3, b"ike@example.net", True),
        (3, b"IKE@example.net", False),  # the local part is case-sensitive
        (3, b"segw.example.net", False),
        (1, V4, True),
        (1, ipaddress.ip_address("192.0.2.2").packed, False),
        (1, V6, False),  # wrong length for the type
        (5, V6, True),
        (5, V4, False),
        (5, ipaddress.ip_address("2001:db8::2").packed, False),
        (9, name("segw.example.net").public_bytes(), True),
        (9, name("segw.example.net", _ASN1Type.PrintableString).public_bytes(), True),
        (9, name("other.example.net").public_bytes(), False),
        (9, b"\x30\x05garbage", False),
        (11, b"segw.example.net", False),
        (4, b"anything", False),
    ],
)
def test_identity_matches(pki, id_type, id_data, expected):
    assert identity_matches(pki["leaf"], id_type, id_data) is expected


def test_identity_dn_compared_as_name():
    # The certificate says PrintableString, the peer's ID says UTF8String: bytes differ.
    subject = name("printable.example.net", _ASN1Type.PrintableString)
    cert = make("x", "ec-leaf", subject=subject, ca=False)
    utf8 = name("printable.example.net").public_bytes()
    assert utf8 != subject.public_bytes()
    assert identity_matches(cert, 9, utf8)
    assert not identity_matches(cert, 2, b"printable.example.net")  # no SAN at all


def test_revocation_urls(pki):
    aia = x509.AuthorityInformationAccess(
        [
            x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP,
                x509.UniformResourceIdentifier("http://ocsp.example.net"),
            ),
            x509.AccessDescription(
                AuthorityInformationAccessOID.CA_ISSUERS,
                x509.UniformResourceIdentifier("http://ca.example.net/int2.crt"),
            ),
        ]
    )
    cdp = x509.CRLDistributionPoints(
        [
            x509.DistributionPoint(
                [x509.UniformResourceIdentifier("http://crl.example.net/int2.crl")],
                None,
                None,
                None,
            ),
            x509.DistributionPoint([x509.DirectoryName(name("crl"))], None, None, None),
            x509.DistributionPoint(
                None,
                x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, "rel")]),
                None,
                None,
            ),
        ]
    )
    leaf = make(
        "r.example.net",
        "ec-leaf",
        (pki["int2"], key("rsa-int2")),
        ca=False,
        extensions=[(aia, False), (cdp, False)],
    )
    assert revocation_urls(leaf) == {
        "ocsp": ["http://ocsp.example.net"],
        "crl": ["http://crl.example.net/int2.crl"],
    }
    assert revocation_urls(pki["leaf"]) == {"ocsp": [], "crl": []}
