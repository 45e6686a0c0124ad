"""Key exchange for the KE payload (RFC 7296 2.14, RFC 3526, RFC 5903, RFC 8031).

Private values are drawn from the injected ``rand`` so that the engine stays sans-IO.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from contextlib import contextmanager

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dh, ec, x25519
from cryptography.utils import CryptographyDeprecationWarning

from .const import DhGroup


@contextmanager
def _ffdh():
    """cryptography 50 deprecates FFDH, but peers still offer MODP-2048 (strongSwan proposes it
    first): keep OpenSSL's constant-time modexp and silence only that warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "Diffie-Hellman over finite", CryptographyDeprecationWarning
        )
        yield


# RFC 3526 section 3: 2048-bit MODP group, generator 2.
MODP_2048_P = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A0879"
    "8E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B"
    "0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA4836"
    "1C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804"
    "F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6"
    "955817183995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
    16,
)
with _ffdh():
    _MODP_PARAMS = dh.DHParameterNumbers(MODP_2048_P, 2)
    _GENERATOR_NUMBERS = dh.DHPublicNumbers(2, _MODP_PARAMS)
    _GENERATOR = _GENERATOR_NUMBERS.public_key()

# curve, coordinate size, group order (SEC 2)
_ECP = {
    DhGroup.ECP_256: (
        ec.SECP256R1(),
        32,
        0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    ),
    DhGroup.ECP_384: (
        ec.SECP384R1(),
        48,
        int(
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
            16,
        ),
    ),
}


class InvalidKeyExchange(ValueError):
    """The peer's KE data is malformed or an unsafe value (wrong size, off-curve, low order)."""


def ke_length(group: DhGroup) -> int:
    """Length of the KE payload data for a group (INVALID_SYNTAX if the peer's differs)."""
    group = DhGroup(group)
    if group == DhGroup.MODP_2048:
        return 256
    if group == DhGroup.CURVE25519:
        return 32
    return 2 * _ECP[group][1]


class DiffieHellman:
    """One side of a key exchange: ``public`` goes into the KE payload, ``shared`` gives g^ir."""

    def __init__(self, group: DhGroup, rand: Callable[[int], bytes]):
        self.group = DhGroup(group)
        if self.group == DhGroup.MODP_2048:
            # A 512-bit exponent: twice the group's ~112-bit strength with a wide margin.
            x = int.from_bytes(rand(64), "big") | (1 << 511)
            with _ffdh():
                # g^x computed by OpenSSL, as the "shared secret" with the generator for a
                # peer: a quarter of Python's pow. The key's own public value is not used.
                self._key = dh.DHPrivateNumbers(x, _GENERATOR_NUMBERS).private_key()
                self.public = self._key.exchange(_GENERATOR).rjust(256, b"\x00")
        elif self.group == DhGroup.CURVE25519:
            self._key = x25519.X25519PrivateKey.from_private_bytes(rand(32))
            self.public = self._key.public_key().public_bytes_raw()
        elif self.group in _ECP:
            curve, size, order = _ECP[self.group]
            if getattr(rand, "csprng", False):
                # the source is the OS's CSPRNG (chassis/randomness.py), as OpenSSL's own key
                # generation draws: half the CPU of deriving from a scalar (a fixed-base table
                # instead of a generic multiplication)
                self._key = ec.generate_private_key(curve)
            else:  # an injected source (tests, replays): the key follows from it
                # 8 extra random bytes make the reduction bias negligible (FIPS 186-4 B.4.1)
                d = int.from_bytes(rand(size + 8), "big") % (order - 1) + 1
                self._key = ec.derive_private_key(d, curve)
            self.public = self._key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )[1:]  # x | y without the 0x04 prefix
        else:  # pragma: no cover - DhGroup() above already rejects others
            raise ValueError(f"unsupported group {group}")

    def shared(self, peer_public: bytes) -> bytes:
        """g^ir as RFC 7296 2.14 wants it: fixed length, big-endian (x only for ECP)."""
        peer_public = bytes(peer_public)
        want = ke_length(self.group)
        if len(peer_public) != want:
            raise InvalidKeyExchange(
                f"{self.group.name} KE data is {len(peer_public)} bytes, expected {want}"
            )
        if self.group == DhGroup.MODP_2048:
            y = int.from_bytes(peer_public, "big")
            if not 1 < y < MODP_2048_P - 1:  # rejects 0, 1, p-1 (small subgroup) and >= p
                raise InvalidKeyExchange("MODP public value out of range")
            with _ffdh():
                peer = dh.DHPublicNumbers(y, _MODP_PARAMS).public_key()
                return self._key.exchange(peer).rjust(256, b"\x00")
        if self.group == DhGroup.CURVE25519:
            try:
                peer = x25519.X25519PublicKey.from_public_bytes(peer_public)
                return self._key.exchange(peer)
            except ValueError as exc:  # all-zero result: low-order point (RFC 8031 2.3)
                raise InvalidKeyExchange(f"Curve25519 exchange failed: {exc}") from None
        curve, size, _ = _ECP[self.group]
        try:
            peer = ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + peer_public)
        except ValueError:
            raise InvalidKeyExchange(f"{self.group.name} point is not on the curve") from None
        return self._key.exchange(ec.ECDH(), peer).rjust(size, b"\x00")
