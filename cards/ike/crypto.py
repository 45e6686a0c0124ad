"""IKEv2 key derivation and SK payload protection (RFC 7296 2.13-2.14, 3.14; RFC 5282).

Sans-IO: randomness comes in as ``rand(n) -> bytes``. prf+ lives in ``prf.py``, DH in ``dh.py``,
AUTH in ``auth.py``; all are re-exported here so the engine imports one module.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .auth import (  # noqa: F401  (re-exported API)
    AuthenticationFailed,
    hash_algorithms_data,
    psk_auth,
    sign_auth,
    signed_octets,
    verify_auth,
    verify_psk_auth,
)
from .const import Encr, Integ, PayloadType, Prf
from .dh import DiffieHellman, InvalidKeyExchange  # noqa: F401  (re-exported API)
from .message import (
    HEADER_LEN,
    IkeDecodeError,
    Message,
    Payload,
    SkfPayload,
    SkPayload,
    decode_payloads,
    encode_payloads,
)
from .prf import prf, prf_plus, prf_size  # noqa: F401  (re-exported API)

Rand = Callable[[int], bytes]

# integ -> (hash, key length, truncated ICV length)   (RFC 4868)
_INTEG = {
    Integ.HMAC_SHA2_256_128: ("sha256", 32, 16),
    Integ.HMAC_SHA2_384_192: ("sha384", 48, 24),
    Integ.HMAC_SHA2_512_256: ("sha512", 64, 32),
}


class IntegrityError(Exception):
    """ICV or AEAD tag mismatch: the engine drops such a message without answering."""


# ------------------------------------------------------------------ suite and keys (2.14)
@dataclass(frozen=True)
class Suite:
    """A negotiated IKE SA transform set; key_bits is the AES key length attribute. Its
    derived sizes are plain attributes, set once (every SK payload reads them a dozen times,
    and a property call costs more than the lookup)."""

    encr: Encr
    key_bits: int
    prf: Prf
    integ: Integ = Integ.NONE
    aead: bool = field(init=False, repr=False, compare=False)
    encr_key_len: int = field(init=False, repr=False, compare=False)  # GCM: + 4-byte salt
    integ_key_len: int = field(init=False, repr=False, compare=False)
    icv_len: int = field(init=False, repr=False, compare=False)
    iv_len: int = field(init=False, repr=False, compare=False)
    block_len: int = field(init=False, repr=False, compare=False)  # RFC 5282 3: GCM needs none

    def __post_init__(self):
        if self.key_bits not in (128, 192, 256):
            raise ValueError(f"AES key length {self.key_bits}")
        aead = self.encr == Encr.AES_GCM_16
        if aead != (self.integ == Integ.NONE):  # RFC 5282: AEAD has no separate integ
            raise ValueError(f"{Encr(self.encr).name} with {Integ(self.integ).name}")
        sizes = {
            "aead": aead,
            "encr_key_len": self.key_bits // 8 + (4 if aead else 0),
            "integ_key_len": 0 if aead else _INTEG[self.integ][1],
            "icv_len": 16 if aead else _INTEG[self.integ][2],
            "iv_len": 8 if aead else 16,
            "block_len": 1 if aead else 16,
        }
        for name, value in sizes.items():
            object.__setattr__(self, name, value)


@dataclass(frozen=True, slots=True)
class DirectionKeys:
    """The keys protecting one direction of an IKE SA (SK_ei/SK_ai or SK_er/SK_ar)."""

    encr: bytes
    integ: bytes = b""


@dataclass(frozen=True, slots=True)  # one per IKE SA: no per-instance dict
class IkeKeys:
    sk_d: bytes
    sk_ai: bytes
    sk_ar: bytes
    sk_ei: bytes
    sk_er: bytes
    sk_pi: bytes
    sk_pr: bytes

    def outbound(self, is_initiator: bool) -> DirectionKeys:
        if is_initiator:
            return DirectionKeys(self.sk_ei, self.sk_ai)
        return DirectionKeys(self.sk_er, self.sk_ar)

    def inbound(self, is_initiator: bool) -> DirectionKeys:
        return self.outbound(not is_initiator)


def skeyseed(alg: Prf, ni: bytes, nr: bytes, shared: bytes) -> bytes:
    """SKEYSEED = prf(Ni | Nr, g^ir) for a new IKE SA."""
    return prf(alg, ni + nr, shared)


def skeyseed_rekey(alg: Prf, old_sk_d: bytes, shared: bytes, ni: bytes, nr: bytes) -> bytes:
    """SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr) for an IKE SA rekey (2.18)."""
    return prf(alg, old_sk_d, shared + ni + nr)


def derive_ike_keys(
    suite: Suite, seed: bytes, ni: bytes, nr: bytes, spi_i: bytes, spi_r: bytes
) -> IkeKeys:
    """Split prf+(SKEYSEED, Ni | Nr | SPIi | SPIr) into the seven SK_* keys."""
    p, a, e = prf_size(suite.prf), suite.integ_key_len, suite.encr_key_len
    sizes = [p, a, a, e, e, p, p]
    km = prf_plus(suite.prf, seed, ni + nr + spi_i + spi_r, sum(sizes))
    parts, off = [], 0
    for n in sizes:
        parts.append(km[off : off + n])
        off += n
    return IkeKeys(*parts)


def child_keymat(alg: Prf, sk_d: bytes, ni: bytes, nr: bytes, length: int, shared: bytes = b""):
    """KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr) for a CHILD_SA (2.17)."""
    return prf_plus(alg, sk_d, shared + ni + nr, length)


# ------------------------------------------------------------------ SK payload (3.14)
def sk_blob_length(suite: Suite, plaintext_len: int) -> int:
    """Length of IV | ciphertext | ICV, needed before encryption to fill in lengths."""
    body = plaintext_len + 1  # + Pad Length octet
    body += -body % suite.block_len
    return suite.iv_len + body + suite.icv_len


def encrypt_sk(
    suite: Suite, keys: DirectionKeys, aad: bytes, plaintext: bytes, rand: Rand
) -> bytes:
    """Return IV | ciphertext | ICV. ``aad`` is every message byte before the IV, with final
    lengths already in place (header, other payloads, SK generic header)."""
    pad = -(len(plaintext) + 1) % suite.block_len
    padded = plaintext + bytes(pad) + bytes([pad])
    iv = rand(suite.iv_len)
    if suite.aead:
        key, salt = keys.encr[:-4], keys.encr[-4:]
        return iv + AESGCM(key).encrypt(salt + iv, padded, aad)
    enc = Cipher(algorithms.AES(keys.encr), modes.CBC(iv)).encryptor()
    ct = enc.update(padded) + enc.finalize()
    return iv + ct + _icv(suite, keys, aad + iv + ct)


def decrypt_sk(suite: Suite, keys: DirectionKeys, aad: bytes, blob: bytes) -> bytes:
    """Inverse of encrypt_sk; returns the plaintext without padding.

    IntegrityError when the ICV/tag does not verify (drop silently); IkeDecodeError when an
    authenticated message has a malformed layout."""
    if len(blob) < suite.iv_len + suite.block_len + suite.icv_len:
        raise IntegrityError("encrypted payload too short to authenticate")
    iv, ct = blob[: suite.iv_len], blob[suite.iv_len :]
    if suite.aead:
        try:
            padded = AESGCM(keys.encr[:-4]).decrypt(keys.encr[-4:] + iv, ct, aad)
        except InvalidTag:
            raise IntegrityError("AES-GCM tag mismatch") from None
    else:
        ct, icv = ct[: -suite.icv_len], ct[-suite.icv_len :]
        if not hmac.compare_digest(icv, _icv(suite, keys, aad + iv + ct)):
            raise IntegrityError("ICV mismatch")
        if len(ct) % 16:
            raise IkeDecodeError(reason="ciphertext is not a whole number of AES blocks")
        dec = Cipher(algorithms.AES(keys.encr), modes.CBC(iv)).decryptor()
        padded = dec.update(ct) + dec.finalize()
    pad = padded[-1]
    if pad + 1 > len(padded):
        raise IkeDecodeError(reason=f"pad length {pad} exceeds plaintext")
    return padded[: -pad - 1]


def _icv(suite: Suite, keys: DirectionKeys, data: bytes) -> bytes:
    name, _, n = _INTEG[suite.integ]
    return hmac.digest(keys.integ, data, name)[:n]


def seal(
    msg: Message, inner: list[Payload], suite: Suite, keys: DirectionKeys, rand: Rand
) -> bytes:
    """Encode ``msg`` (its own payloads first) with ``inner`` payloads inside a final SK."""
    return _seal(msg, encode_payloads(inner), _first(inner), suite, keys, rand)


def seal_fragments(
    msg: Message, inner: list[Payload], suite: Suite, keys: DirectionKeys, rand: Rand,
    max_len: int,
) -> list[bytes]:  # fmt: skip
    """RFC 7383 2.5: the encoded ``inner`` payloads cut into SKF fragments, each a whole IKE
    message of at most ``max_len`` octets, each encrypted and authenticated on its own (the
    AAD covers the header, the SKF header and the Fragment Number / Total Fragments)."""
    return _fragments(msg, encode_payloads(inner), _first(inner), suite, keys, rand, max_len)


def seal_message(
    msg: Message, inner: list[Payload], suite: Suite, keys: DirectionKeys, rand: Rand,
    max_len: int | None = None,
) -> list[bytes]:  # fmt: skip
    """The datagrams of one protected message: ``seal``, or ``seal_fragments`` when
    ``max_len`` is given and the sealed message would be longer. The payloads are encoded
    once and only what is sent is encrypted."""
    plaintext, first = encode_payloads(inner), _first(inner)
    if max_len is not None:
        # header, msg's own payloads, the SK generic header, IV | ciphertext | ICV
        whole = HEADER_LEN + len(encode_payloads(msg.payloads)) + 4
        if whole + sk_blob_length(suite, len(plaintext)) > max_len:
            return _fragments(msg, plaintext, first, suite, keys, rand, max_len)
    return [_seal(msg, plaintext, first, suite, keys, rand)]


def _first(inner: list[Payload]) -> int:
    return inner[0].ptype if inner else PayloadType.NONE


def _seal(msg: Message, plaintext: bytes, first: int, suite: Suite, keys: DirectionKeys,
          rand: Rand) -> bytes:  # fmt: skip
    n = sk_blob_length(suite, len(plaintext))
    placeholder = Message(
        msg.spi_i, msg.spi_r, msg.exchange, msg.flags, msg.message_id,
        [*msg.payloads, SkPayload(first, bytes(n))], msg.minor_version,
    )  # fmt: skip
    aad = placeholder.encode()[:-n]
    blob = encrypt_sk(suite, keys, aad, plaintext, rand)
    assert len(blob) == n
    return aad + blob


def _fragments(msg: Message, plaintext: bytes, first: int, suite: Suite, keys: DirectionKeys,
               rand: Rand, max_len: int) -> list[bytes]:  # fmt: skip
    # header 28, SKF header 4 + 4, IV, ICV; the chunk plus its pad-length octet, padded to
    # whole blocks, fills what is left
    avail = max_len - HEADER_LEN - 8 - suite.iv_len - suite.icv_len
    room = avail // suite.block_len * suite.block_len - 1
    if room < 64:
        raise ValueError(f"fragment size {max_len} leaves no room for data")
    chunks = [plaintext[i : i + room] for i in range(0, len(plaintext), room)] or [b""]
    out = []
    for n, chunk in enumerate(chunks, 1):
        size = sk_blob_length(suite, len(chunk))
        skf = SkfPayload(first if n == 1 else PayloadType.NONE, n, len(chunks), bytes(size))
        head = Message(msg.spi_i, msg.spi_r, msg.exchange, msg.flags, msg.message_id, [skf],
                       msg.minor_version)  # fmt: skip
        aad = head.encode()[:-size]
        out.append(aad + encrypt_sk(suite, keys, aad, chunk, rand))
    return out


def open_sk(msg: Message, suite: Suite, keys: DirectionKeys) -> list[Payload]:
    """Decrypt and parse the SK payload of a decoded message (uses ``msg.raw``)."""
    sk = msg.payloads[-1] if msg.payloads else None
    if not isinstance(sk, SkPayload):
        raise IkeDecodeError(reason="message has no encrypted payload")
    return decode_payloads(sk.first_inner, _decrypt_last(msg, sk.data, suite, keys))


def open_skf(msg: Message, suite: Suite, keys: DirectionKeys) -> tuple[SkfPayload, bytes]:
    """Decrypt one RFC 7383 fragment; the caller reassembles and then calls decode_payloads."""
    skf = msg.payloads[-1] if msg.payloads else None
    if not isinstance(skf, SkfPayload):
        raise IkeDecodeError(reason="message has no encrypted fragment")
    return skf, _decrypt_last(msg, skf.data, suite, keys)


def _decrypt_last(msg: Message, blob: bytes, suite: Suite, keys: DirectionKeys) -> bytes:
    # SK/SKF is always last, so everything before its blob is the AAD (for SKF that includes
    # the Fragment Number and Total Fragments fields, as RFC 7383 2.5 requires).
    return decrypt_sk(suite, keys, msg.raw[: len(msg.raw) - len(blob)], blob)
