"""IKEv2 crypto: prf+, keymat, DH, SK protection, AUTH."""

import hmac
import os
import random
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as c_hmac
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st
from pyasn1.codec.der import encoder
from pyasn1.type import univ

from cards.ike import crypto
from cards.ike.const import (
    FLAG_INITIATOR,
    FLAG_RESPONSE,
    AuthMethod,
    DhGroup,
    Encr,
    ExchangeType,
    HashAlg,
    IdType,
    Integ,
    NotifyType,
    PayloadType,
    Prf,
)
from cards.ike.crypto import (
    AuthenticationFailed,
    DiffieHellman,
    DirectionKeys,
    IntegrityError,
    InvalidKeyExchange,
    Suite,
    decrypt_sk,
    derive_ike_keys,
    encrypt_sk,
    open_sk,
    prf,
    prf_plus,
    seal,
    sign_auth,
    signed_octets,
    skeyseed,
    verify_auth,
)
from cards.ike.dh import MODP_2048_P
from cards.ike.message import (
    IdPayload,
    IkeDecodeError,
    Message,
    NoncePayload,
    NotifyPayload,
    SkfPayload,
)
from chassis.randomness import SystemRandom

HASH = {Prf.HMAC_SHA2_256: "sha256", Prf.HMAC_SHA2_384: "sha384", Prf.HMAC_SHA2_512: "sha512"}

SUITES = [
    Suite(Encr.AES_CBC, bits, p, integ)
    for bits in (128, 256)
    for p, integ in [
        (Prf.HMAC_SHA2_256, Integ.HMAC_SHA2_256_128),
        (Prf.HMAC_SHA2_384, Integ.HMAC_SHA2_384_192),
        (Prf.HMAC_SHA2_512, Integ.HMAC_SHA2_512_256),
    ]
] + [Suite(Encr.AES_GCM_16, bits, Prf.HMAC_SHA2_256) for bits in (128, 192, 256)]


def seeded(seed=1):
    r = random.Random(seed)
    return lambda n: r.randbytes(n)


# ------------------------------------------------------------------ prf, prf+
def test_prf_matches_rfc4231_and_rfc4868_vectors():
    # RFC 4231 test case 2 (key "Jefe"), the HMAC-SHA-256 that PRF_HMAC_SHA2_256 is.
    assert prf(Prf.HMAC_SHA2_256, b"Jefe", b"what do ya want for nothing?").hex() == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )
    # RFC 4868 2.7.2.1 test case 1: 32-byte key, the PRF's preferred key size.
    assert prf(Prf.HMAC_SHA2_256, b"\x0b" * 32, b"Hi There").hex() == (
        "198a607eb44bfbc69903a0f1cf2bbdc5ba0aa3f3d9ae3c1c7a3b1696a0b68cf7"
    )


@pytest.mark.parametrize("alg", list(Prf))
@pytest.mark.parametrize("length", [1, 32, 100, 777])
def test_prf_plus_against_independent_hmac(alg, length):
    key, seed = b"K" * 20, b"seed material"
    ts, t = [], b""
    for n in range(1, 256):  # T1 = prf(K, S|0x01), Tn = prf(K, Tn-1|S|n)
        t = hmac.new(key, t + seed + bytes([n]), HASH[alg]).digest()
        ts.append(t)
    assert prf_plus(alg, key, seed, length) == b"".join(ts)[:length]


def test_prf_plus_refuses_more_than_255_blocks():
    prf_plus(Prf.HMAC_SHA2_256, b"k", b"s", 255 * 32)
    with pytest.raises(ValueError):
        prf_plus(Prf.HMAC_SHA2_256, b"k", b"s", 255 * 32 + 1)


# ------------------------------------------------------------------ key material
@pytest.mark.parametrize("suite", SUITES, ids=str)
def test_keymat_split(suite):
    ni, nr, g = b"i" * 32, b"r" * 32, b"g" * 256
    spi_i, spi_r = b"\x01" * 8, b"\x02" * 8
    seed = skeyseed(suite.prf, ni, nr, g)
    assert seed == hmac.new(ni + nr, g, HASH[suite.prf]).digest()
    keys = derive_ike_keys(suite, seed, ni, nr, spi_i, spi_r)
    p = {Prf.HMAC_SHA2_256: 32, Prf.HMAC_SHA2_384: 48, Prf.HMAC_SHA2_512: 64}[suite.prf]
    a = {Integ.NONE: 0, Integ.HMAC_SHA2_256_128: 32, Integ.HMAC_SHA2_384_192: 48,
         Integ.HMAC_SHA2_512_256: 64}[suite.integ]  # fmt: skip
    e = suite.key_bits // 8 + (4 if suite.encr == Encr.AES_GCM_16 else 0)  # RFC 5282 salt
    sizes = [p, a, a, e, e, p, p]
    fields = [keys.sk_d, keys.sk_ai, keys.sk_ar, keys.sk_ei, keys.sk_er, keys.sk_pi, keys.sk_pr]
    assert [len(f) for f in fields] == sizes
    assert b"".join(fields) == prf_plus(suite.prf, seed, ni + nr + spi_i + spi_r, sum(sizes))
    assert keys.outbound(True) == DirectionKeys(keys.sk_ei, keys.sk_ai) == keys.inbound(False)


def test_suite_rejects_inconsistent_transforms():
    with pytest.raises(ValueError):
        Suite(Encr.AES_GCM_16, 128, Prf.HMAC_SHA2_256, Integ.HMAC_SHA2_256_128)
    with pytest.raises(ValueError):
        Suite(Encr.AES_CBC, 128, Prf.HMAC_SHA2_256)
    with pytest.raises(ValueError):
        Suite(Encr.AES_CBC, 100, Prf.HMAC_SHA2_256, Integ.HMAC_SHA2_256_128)


# ------------------------------------------------------------------ DH
@pytest.mark.parametrize("group", list(DhGroup))
def test_dh_agreement(group):
    a, b = DiffieHellman(group, seeded(1)), DiffieHellman(group, seeded(2))
    size = {
        DhGroup.MODP_2048: 256,
        DhGroup.ECP_256: 64,
        DhGroup.ECP_384: 96,
        DhGroup.CURVE25519: 32,
    }
    assert len(a.public) == size[group]
    shared = a.shared(b.public)
    assert shared == b.shared(a.public)
    assert len(shared) == {DhGroup.ECP_256: 32, DhGroup.ECP_384: 48}.get(group, size[group])
    assert DiffieHellman(group, seeded(1)).public == a.public  # randomness is injected
    with pytest.raises(InvalidKeyExchange):
        a.shared(b.public + b"\x00")


@pytest.mark.parametrize("group", [DhGroup.ECP_256, DhGroup.ECP_384])
def test_ecp_keys_come_from_openssl_only_when_the_source_says_it_is_the_os(group):
    """A source marked ``csprng`` (chassis.randomness.SystemRandom) lets OpenSSL generate the
    key; any other source (a test's seeded one) is drawn from, so the key follows from it."""

    class Source:
        def __init__(self, csprng: bool) -> None:
            self.csprng, self.asked = csprng, []

        def __call__(self, n: int) -> bytes:
            self.asked.append(n)
            return os.urandom(n)

    system, injected = Source(True), Source(False)
    a, b = DiffieHellman(group, system), DiffieHellman(group, injected)
    assert a.shared(b.public) == b.shared(a.public)
    assert system.asked == [] and len(injected.asked) == 1
    assert SystemRandom().csprng and len(SystemRandom()(16)) == 16


@pytest.mark.parametrize("y", [0, 1, MODP_2048_P - 1, MODP_2048_P])
def test_modp_rejects_degenerate_values(y):
    with pytest.raises(InvalidKeyExchange):
        DiffieHellman(DhGroup.MODP_2048, seeded()).shared(y.to_bytes(256, "big"))


def test_modp_agrees_with_plain_modexp():
    a, b = DiffieHellman(DhGroup.MODP_2048, seeded(3)), DiffieHellman(DhGroup.MODP_2048, seeded(4))
    xa = int.from_bytes(seeded(3)(64), "big") | (1 << 511)
    assert a.shared(b.public) == pow(int.from_bytes(b.public, "big"), xa, MODP_2048_P).to_bytes(
        256, "big"
    )


@pytest.mark.parametrize("group", [DhGroup.ECP_256, DhGroup.ECP_384])
def test_ecp_rejects_off_curve_point(group):
    pub = bytearray(DiffieHellman(group, seeded(5)).public)
    pub[-1] ^= 1
    with pytest.raises(InvalidKeyExchange):
        DiffieHellman(group, seeded()).shared(bytes(pub))


def test_curve25519_rejects_low_order_point():
    with pytest.raises(InvalidKeyExchange):
        DiffieHellman(DhGroup.CURVE25519, seeded()).shared(bytes(32))


# ------------------------------------------------------------------ SK payload
def keys_for(suite):
    return derive_ike_keys(suite, b"s" * 32, b"i" * 32, b"r" * 32, b"\x01" * 8, b"\x02" * 8)


def auth_request():
    return Message(b"\x01" * 8, b"\x02" * 8, ExchangeType.IKE_AUTH, FLAG_INITIATOR, 1)


INNER = [
    IdPayload(IdType.FQDN, b"enb1.example.net", PayloadType.IDi),
    NotifyPayload(NotifyType.INITIAL_CONTACT),
    NoncePayload(b"x" * 37),
]


@pytest.mark.parametrize("suite", SUITES, ids=str)
@pytest.mark.parametrize("inner", [INNER, INNER[:1], []], ids=["3", "1", "empty"])
def test_sk_round_trip(suite, inner):
    keys = keys_for(suite)
    wire = seal(auth_request(), inner, suite, keys.outbound(True), seeded())
    msg = Message.decode(wire)
    assert msg.payloads[-1].ptype == PayloadType.SK
    assert open_sk(msg, suite, keys.inbound(False)) == inner
    with pytest.raises(IntegrityError):  # the other direction's keys do not open it
        open_sk(msg, suite, keys.outbound(False))


@pytest.mark.parametrize("suite", SUITES, ids=str)
def test_sk_tamper_anywhere_is_an_integrity_error(suite):
    keys = keys_for(suite)
    wire = seal(auth_request(), INNER, suite, keys.outbound(True), seeded())
    # header SPI, message id, SK generic header, IV, ciphertext, ICV
    for pos in (0, 20, 28, 33, len(wire) // 2, len(wire) - 1):
        bad = bytearray(wire)
        bad[pos] ^= 0x40
        with pytest.raises(IntegrityError):
            open_sk(Message.decode(bytes(bad)), suite, keys.inbound(False))


def test_sk_too_short_and_missing():
    suite = SUITES[0]
    with pytest.raises(IntegrityError):
        decrypt_sk(suite, keys_for(suite).outbound(True), b"", b"\x00" * 20)
    with pytest.raises(IkeDecodeError):
        open_sk(auth_request(), suite, keys_for(suite).outbound(True))


def test_sk_bad_padding_after_valid_icv_is_a_syntax_error():
    suite = Suite(Encr.AES_CBC, 128, Prf.HMAC_SHA2_256, Integ.HMAC_SHA2_256_128)
    k = keys_for(suite).outbound(True)
    iv = b"\x07" * 16
    enc = Cipher(algorithms.AES(k.encr), modes.CBC(iv)).encryptor()
    ct = enc.update(b"\x00" * 15 + b"\x40") + enc.finalize()  # pad length 64 > 15
    icv = hmac.new(k.integ, b"AAD" + iv + ct, "sha256").digest()[:16]
    with pytest.raises(IkeDecodeError):
        decrypt_sk(suite, k, b"AAD", iv + ct + icv)


def independent_cbc_sha256_decrypt(encr_key, integ_key, wire):
    """RFC 7296 3.14 by hand: header(28) | SK header(4) | IV(16) | C | ICV(16)."""
    assert wire[16] == PayloadType.SK
    (length,) = struct.unpack("!I", wire[24:28])
    assert length == len(wire)
    (sk_len,) = struct.unpack("!H", wire[30:32])
    assert 28 + sk_len == len(wire)
    iv, ct, icv = wire[32:48], wire[48:-16], wire[-16:]
    mac = c_hmac.HMAC(integ_key, hashes.SHA256())
    mac.update(wire[:-16])
    assert mac.finalize()[:16] == icv
    dec = Cipher(algorithms.AES(encr_key), modes.CBC(iv)).decryptor()
    padded = dec.update(ct) + dec.finalize()
    return wire[28], padded[: -padded[-1] - 1]


def test_cbc_sha256_against_independent_implementation():
    suite = Suite(Encr.AES_CBC, 256, Prf.HMAC_SHA2_256, Integ.HMAC_SHA2_256_128)
    keys = keys_for(suite)
    wire = seal(auth_request(), INNER, suite, keys.outbound(True), seeded(9))
    first, plaintext = independent_cbc_sha256_decrypt(keys.sk_ei, keys.sk_ai, wire)
    assert first == PayloadType.IDi
    assert plaintext == crypto.encode_payloads(INNER)
    # and the reverse: a message protected by hand opens with our code
    iv, body = b"\x05" * 16, crypto.encode_payloads(INNER)
    pad = -(len(body) + 1) % 16
    padded = body + b"\xaa" * pad + bytes([pad])  # padding bytes need not be zero
    enc = Cipher(algorithms.AES(keys.sk_er), modes.CBC(iv)).encryptor()
    ct = enc.update(padded) + enc.finalize()
    n = 28 + 4 + 16 + len(ct) + 16
    head = struct.pack("!8s8sBBBBII", b"\x01" * 8, b"\x02" * 8, 46, 0x20, 35, FLAG_RESPONSE, 1, n)
    head += struct.pack("!BBH", PayloadType.IDi, 0, n - 28)
    icv = hmac.new(keys.sk_ar, head + iv + ct, "sha256").digest()[:16]
    msg = Message.decode(head + iv + ct + icv)
    assert open_sk(msg, suite, keys.inbound(True)) == INNER


def test_gcm_against_independent_implementation():
    suite = Suite(Encr.AES_GCM_16, 256, Prf.HMAC_SHA2_256)
    k = keys_for(suite).outbound(True)
    blob = encrypt_sk(suite, k, b"header+skhdr", b"plain", seeded())
    iv, ct = blob[:8], blob[8:]
    assert len(ct) == len(b"plain") + 1 + 16  # pad-length octet, 16-byte ICV
    padded = AESGCM(k.encr[:32]).decrypt(k.encr[32:] + iv, ct, b"header+skhdr")
    assert padded == b"plain\x00"


# ------------------------------------------------------------------ AUTH
@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def algid_der(oid, null_params):
    seq = univ.Sequence()
    seq.setComponentByPosition(0, univ.ObjectIdentifier(oid))
    if null_params:
        seq.setComponentByPosition(1, univ.Null(""))
    return encoder.encode(seq)


OCTETS = signed_octets(
    b"IKE_SA_INIT bytes", b"N" * 32, Prf.HMAC_SHA2_256, b"p" * 32, b"\x02\x00\x00\x00id"
)


def test_signed_octets_layout():
    mac = hmac.new(b"p" * 32, b"\x02\x00\x00\x00id", "sha256").digest()
    assert OCTETS == b"IKE_SA_INIT bytes" + b"N" * 32 + mac


@pytest.mark.parametrize(
    "h,oid", [(HashAlg.SHA2_256, "1.2.840.113549.1.1.11"), (HashAlg.SHA2_384, "1.2.840.113549.1.1.12"),
              (HashAlg.SHA2_512, "1.2.840.113549.1.1.13")],
)  # fmt: skip
def test_rfc7427_rsa_round_trip(rsa_key, h, oid):
    data = sign_auth(rsa_key, OCTETS, AuthMethod.DIGITAL_SIGNATURE, h)
    der = algid_der(oid, True)
    assert data[0] == len(der) and data[1 : 1 + len(der)] == der
    assert len(data) == 1 + len(der) + 256
    assert verify_auth(rsa_key.public_key(), AuthMethod.DIGITAL_SIGNATURE, data, OCTETS) == h
    with pytest.raises(AuthenticationFailed):
        verify_auth(rsa_key.public_key(), AuthMethod.DIGITAL_SIGNATURE, data, OCTETS + b"x")
    with pytest.raises(AuthenticationFailed):
        verify_auth(rsa_key.public_key(), 14, data, OCTETS, allowed_hashes={HashAlg.SHA2_512} - {h})


@pytest.mark.parametrize(
    "curve,oid,h", [(ec.SECP256R1(), "1.2.840.10045.4.3.2", HashAlg.SHA2_256),
                    (ec.SECP384R1(), "1.2.840.10045.4.3.3", HashAlg.SHA2_384)],
)  # fmt: skip
def test_rfc7427_ecdsa_round_trip(curve, oid, h, rsa_key):
    key = ec.generate_private_key(curve)
    data = sign_auth(key, OCTETS)  # hash follows the curve by default
    der = algid_der(oid, False)
    assert data[1 : 1 + data[0]] == der
    assert verify_auth(key.public_key(), AuthMethod.DIGITAL_SIGNATURE, data, OCTETS) == h
    with pytest.raises(AuthenticationFailed):  # ECDSA AUTH against an RSA certificate
        verify_auth(rsa_key.public_key(), AuthMethod.DIGITAL_SIGNATURE, data, OCTETS)
    bad = bytearray(data)
    bad[-5] ^= 1
    with pytest.raises(AuthenticationFailed):
        verify_auth(key.public_key(), AuthMethod.DIGITAL_SIGNATURE, bytes(bad), OCTETS)


def test_rsa_sig_method_1_uses_sha1(rsa_key):
    from cryptography.hazmat.primitives.asymmetric import padding

    data = sign_auth(rsa_key, OCTETS, AuthMethod.RSA_SIG)
    rsa_key.public_key().verify(data, OCTETS, padding.PKCS1v15(), hashes.SHA1())
    assert verify_auth(rsa_key.public_key(), AuthMethod.RSA_SIG, data, OCTETS) is None
    with pytest.raises(AuthenticationFailed):
        verify_auth(
            rsa_key.public_key(), AuthMethod.RSA_SIG, data[:-1] + bytes([data[-1] ^ 1]), OCTETS
        )


@pytest.mark.parametrize("data", [b"", b"\x05abc", b"\x0c" + bytes(12) + b"sig"])
def test_rfc7427_malformed_auth_data(rsa_key, data):
    with pytest.raises(AuthenticationFailed) as e:
        verify_auth(rsa_key.public_key(), AuthMethod.DIGITAL_SIGNATURE, data, OCTETS)
    assert e.value.notify == NotifyType.AUTHENTICATION_FAILED


def test_psk_auth():
    expected = hmac.new(
        hmac.new(b"secret", b"Key Pad for IKEv2", "sha256").digest(), OCTETS, "sha256"
    )
    assert crypto.psk_auth(Prf.HMAC_SHA2_256, b"secret", OCTETS) == expected.digest()
    crypto.verify_psk_auth(Prf.HMAC_SHA2_256, b"secret", OCTETS, expected.digest())
    with pytest.raises(AuthenticationFailed):
        crypto.verify_psk_auth(Prf.HMAC_SHA2_256, b"wrong", OCTETS, expected.digest())


# ------------------------------------------------------------------ SKF, robustness
@pytest.mark.parametrize("suite", [SUITES[0], SUITES[-1]], ids=str)
def test_skf_fragment_round_trip(suite):
    keys = keys_for(suite)
    chunk = crypto.encode_payloads(INNER)[:40]
    n = crypto.sk_blob_length(suite, len(chunk))
    frag = SkfPayload(PayloadType.IDi, 1, 2, bytes(n))
    aad = Message(b"\x01" * 8, b"\x02" * 8, 35, FLAG_INITIATOR, 1, [frag]).encode()[:-n]
    wire = aad + encrypt_sk(suite, keys.outbound(True), aad, chunk, seeded())
    skf, plain = crypto.open_skf(Message.decode(wire), suite, keys.inbound(False))
    assert (skf.first_inner, skf.number, skf.total, plain) == (PayloadType.IDi, 1, 2, chunk)
    bad = bytearray(wire)
    bad[33] ^= 1  # Fragment Number is authenticated too (RFC 7383 2.5)
    with pytest.raises((IntegrityError, IkeDecodeError)):
        crypto.open_skf(Message.decode(bytes(bad)), suite, keys.inbound(False))


@settings(max_examples=300)
@given(st.sampled_from(SUITES), st.binary(max_size=200))
def test_decrypt_random_blobs_raises_only_integrity_error(suite, blob):
    with pytest.raises(IntegrityError):
        decrypt_sk(suite, keys_for(suite).outbound(True), b"aad", blob)


def test_modp2048_public_value_is_g_to_the_x():
    # computed by OpenSSL (the exchange with the generator), checked against Python's pow
    from cards.ike.dh import MODP_2048_P, DiffieHellman

    seed = bytes(range(64))
    x = int.from_bytes(seed, "big") | (1 << 511)
    ours = DiffieHellman(DhGroup.MODP_2048, lambda n: seed[:n])
    assert ours.public == pow(2, x, MODP_2048_P).to_bytes(256, "big")
    other = DiffieHellman(DhGroup.MODP_2048, lambda n: bytes(reversed(seed))[:n])
    assert ours.shared(other.public) == other.shared(ours.public)
