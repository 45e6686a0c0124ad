"""ESP in tunnel mode for one CHILD_SA (RFC 4303), sans-IO.

``EspSa.from_child(child)`` holds both directions of a ``cards.ike.child.ChildSa``: ``seal``
protects an inner IPv4/IPv6 packet we send, ``open`` checks and unwraps one the peer sent. The
ESP packet starts with the SPI; UDP encapsulation (RFC 3948, port 4500) is the caller's. No
sockets, no clock, no ``os.urandom``: the IV comes from an injected ``rand(n)``.

Wire format: SPI | Sequence Number (32 bits, from 1, no ESN) | IV | ciphertext of (inner packet
| Padding 1, 2, 3... | Pad Length | Next Header 4 or 41) | ICV.

- AES-GCM-16 (RFC 4106): 8-byte IV, nonce = the key's 4-byte salt | IV, AAD = SPI | Sequence
  Number, 16-byte ICV (the tag); the trailer is aligned on 4 octets.
- AES-CBC (RFC 3602) with HMAC-SHA2-256-128/384-192/512-256 (RFC 4868): 16-byte IV, the ICV
  (truncated HMAC) covers SPI .. end of ciphertext and is verified before anything is decrypted.

Inbound processing order (RFC 4303 3.4): SPI, anti-replay pre-check (3.4.3: sliding window,
``replay_window`` packets, updated only once the ICV verified), integrity (and decryption),
padding and Next Header, then the inner packet's addresses, protocol and ports against the
CHILD_SA's traffic selectors (RFC 4301 5.2). Every drop is counted under a name and described
in ``last_drop``; nothing the peer sends makes ``open`` raise.

Selectors are TSi x TSr (RFC 7296 2.9): a packet matches when its source lies in one selector
of the sender's side and its destination in one selector of the receiver's side. Ports are
those of TCP, UDP and SCTP; ICMP/ICMPv6 use Type << 8 | Code for both (RFC 7296 3.13.1). A
packet without ports (other protocols, non-first fragments) only matches a selector whose
port range is 0-65535.

Lifetimes (RFC 4301 4.4.2.1) count inner packets and their bytes, both directions summed:
``soft_expired`` at 90% (start a rekey), ``hard_expired`` at 100%, after which ``seal`` and
``open`` refuse (``dropped_expired``). Running out of outbound sequence numbers is a hard
expiry too (the soft threshold is 90% of 2^32 - 1).
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import struct
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hmac import HMAC

from .ike.child import ChildSa
from .ike.const import Encr, Integ, TsType

Rand = Callable[[int], bytes]
GCM_CONTEXTS = 2048  # AES-GCM contexts kept (two per busy child): about 5 MB at most

NH_IPV4 = 4  # IP-in-IP: the Next Header of a tunnelled IPv4 packet
NH_IPV6 = 41
NH_NONE = 59  # a dummy packet (RFC 4303 2.6): discarded
SEQ_MAX = 0xFFFFFFFF
SEQ_SOFT = SEQ_MAX * 9 // 10

PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_ICMPV6, PROTO_SCTP = 1, 6, 17, 58, 132
_PORTS = frozenset((PROTO_TCP, PROTO_UDP, PROTO_SCTP))
_ICMP = frozenset((PROTO_ICMP, PROTO_ICMPV6))
_V6_EXT = frozenset((0, 43, 60))  # hop-by-hop, routing, destination options: (len + 1) * 8
_V6_FRAG, _V6_AH = 44, 51

# integ -> (hash, ICV length)   (RFC 4868)
_INTEG = {
    Integ.HMAC_SHA2_256_128: (hashes.SHA256, 16),
    Integ.HMAC_SHA2_384_192: (hashes.SHA384, 24),
    Integ.HMAC_SHA2_512_256: (hashes.SHA512, 32),
}

DROPS = (
    "dropped_spi",  # inbound: not our SPI
    "dropped_auth",  # inbound: ICV / AEAD tag mismatch
    "dropped_replay",  # inbound: duplicate, left of the window, or sequence number 0
    "dropped_malformed",  # inbound: too short, bad padding, Next Header, inner packet
    "dropped_ts",  # inbound: inner packet outside the selectors
    "dropped_dummy",  # inbound: Next Header 59 (RFC 4303 2.6)
    "dropped_expired",  # either way: hard lifetime reached
    "dropped_ts_out",  # outbound: inner packet outside the selectors
    "dropped_invalid_out",  # outbound: not an IPv4/IPv6 packet of its stated length
    "dropped_seq_overflow",  # outbound: 2^32 - 1 packets sent, a rekey is needed
)

_SEQ = struct.Struct("!I")
_HDR = struct.Struct("!4sI")  # SPI, Sequence Number
_V4 = struct.Struct("!BxH2xHxB2xII")  # ver/ihl, total length, flags/offset, proto, src, dst
_V6 = struct.Struct("!4xHB1x16s16s")  # payload length, next header, src, dst
_PORT_PAIR = struct.Struct("!HH")
_PADS = tuple(bytes(range(1, n + 1)) for n in range(256))  # RFC 4303 2.4 default padding


# ------------------------------------------------------------------ inner packets
def _headers(p: bytes):
    """(version, src int, dst int, proto, sport, dport, length) of an IPv4/IPv6 packet, or
    None. Ports are None when the packet carries none (see the module docstring)."""
    n = len(p)
    if n < 20:
        return None
    version = p[0] >> 4
    if version == 4:
        vihl, total, frag, proto, src, dst = _V4.unpack_from(p)
        off = (vihl & 15) * 4
        if off < 20 or total < off or total > n:
            return None
        first = not frag & 0x1FFF
    elif version == 6:
        if n < 40:
            return None
        plen, proto, s, d = _V6.unpack_from(p)
        total, off = 40 + plen, 40
        if total > n:
            return None
        src, dst = int.from_bytes(s, "big"), int.from_bytes(d, "big")
        first = True
        while proto in _V6_EXT or proto == _V6_FRAG or proto == _V6_AH:
            if off + 8 > total:
                return None
            if proto == _V6_FRAG:
                if _SEQ.unpack_from(p, off)[0] & 0xFFF8:  # a later fragment: no ports
                    first = False
                    proto, off = p[off], off + 8
                    break
                size = 8
            elif proto == _V6_AH:
                size = (p[off + 1] + 2) * 4
            else:
                size = (p[off + 1] + 1) * 8
            proto, off = p[off], off + size
        if off > total:
            return None
    else:
        return None
    sport = dport = None
    if first:
        if proto in _PORTS:
            if off + 4 <= total:
                sport, dport = _PORT_PAIR.unpack_from(p, off)
        elif proto in _ICMP and off + 2 <= total:
            sport = dport = p[off] << 8 | p[off + 1]
    return version, src, dst, proto, sport, dport, total


def parse_inner(packet: bytes):
    """(version, src, dst, proto, sport, dport) of an IPv4 or IPv6 packet (addresses as
    ipaddress objects, ports None when absent), or None when it is not one."""
    h = _headers(packet)
    if h is None:
        return None
    version, src, dst, proto, sport, dport, _ = h
    cls = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    return version, cls(src), cls(dst), proto, sport, dport


def _csum(data: bytes) -> int:
    """Internet checksum (RFC 1071): 2^16 = 1 (mod 0xFFFF), so the one's complement sum of
    the 16-bit words is the number's residue (0xFFFF rather than 0 unless all zero)."""
    if len(data) & 1:
        data += b"\0"
    v = int.from_bytes(data, "big")
    s = v % 0xFFFF
    if s == 0 and v:
        s = 0xFFFF
    return ~s & 0xFFFF


def build_udp(src, dst, sport: int, dport: int, payload: bytes, *, ttl: int = 64) -> bytes:
    """An IPv4 or IPv6 packet with one UDP datagram, lengths and checksums filled in (the UDP
    checksum too, for IPv4 as well)."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version != d.version:
        raise ValueError(f"{s} and {d} are of different families")
    n = 8 + len(payload)
    if n > 0xFFFF or (s.version == 4 and n + 20 > 0xFFFF):
        raise ValueError(f"UDP payload of {len(payload)} bytes does not fit")
    udp = struct.pack("!HHH", sport, dport, n)
    if s.version == 4:
        pseudo = s.packed + d.packed + struct.pack("!xBH", PROTO_UDP, n)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + n, 0, 0x4000, ttl, PROTO_UDP, 0,
                         s.packed, d.packed)  # fmt: skip
        ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    else:
        pseudo = s.packed + d.packed + struct.pack("!I3xB", n, PROTO_UDP)
        ip = struct.pack("!IHBB16s16s", 6 << 28, n, PROTO_UDP, ttl, s.packed, d.packed)
    check = _csum(pseudo + udp + b"\0\0" + payload) or 0xFFFF  # 0 means "none" (RFC 768)
    return ip + udp + struct.pack("!H", check) + payload


# ------------------------------------------------------------------ selectors
def _compile(selectors) -> tuple:
    out = []
    for t in selectors:
        version = 4 if t.ts_type == TsType.IPV4_ADDR_RANGE else 6
        out.append((version, int(t.start_addr), int(t.end_addr), t.ip_proto, t.start_port,
                    t.end_port))  # fmt: skip
    return tuple(out)


def _everything(sels: tuple) -> frozenset:
    """The IP versions a selector list lets through whole (the fast path)."""
    full = {4: (0, (1 << 32) - 1), 6: (0, (1 << 128) - 1)}
    versions = frozenset(
        v
        for v, lo, hi, p, plo, phi in sels
        if (lo, hi) == full[v] and not p and (plo, phi) == (0, 0xFFFF)
    )
    return _VERSIONS.setdefault(versions, versions)


_VERSIONS: dict[frozenset, frozenset] = {}  # at most 4 (subsets of {4, 6}), shared


# A card holds an EspSa per child: what many of them hold alike is shared, not copied. The
# side of the gateway is the same selectors for every child of a payload (the peer's, one
# host each, fall out of the cache again).
@functools.lru_cache(maxsize=64)
def _shared_selectors(selectors: tuple) -> tuple[tuple, frozenset]:
    compiled = _compile(selectors)
    return compiled, _everything(compiled)


def _selectors(selectors) -> tuple[tuple, frozenset]:
    """(compiled selectors, the versions they let through whole) of a child's side."""
    try:
        return _shared_selectors(tuple(selectors))
    except TypeError:  # unhashable: not shared
        compiled = _compile(selectors)
        return compiled, _everything(compiled)


@functools.lru_cache(maxsize=64)
def _trailers(block: int) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    """Padding | Pad Length | Next Header for an inner packet of length % block, by version."""
    return tuple(
        tuple(_PADS[pad] + bytes((pad, nh)) for pad in (-(r + 2) % block for r in range(block)))
        for nh in (NH_IPV4, NH_IPV6)
    )


@functools.lru_cache(maxsize=64)
def _limits(lifetime_bytes: int | None, lifetime_packets: int | None, window: int) -> tuple:
    """(hard bytes, hard packets, soft bytes, soft packets, replay mask): the same ints for
    every child of a payload."""
    never = 1 << 64
    hard_bytes = lifetime_bytes if lifetime_bytes is not None else never
    hard_packets = lifetime_packets if lifetime_packets is not None else never
    soft_bytes = -(-hard_bytes * 9 // 10)  # ceil(90%)
    soft_packets = -(-hard_packets * 9 // 10)
    return hard_bytes, hard_packets, soft_bytes, soft_packets, (1 << window) - 1


def _match(sels: tuple, version: int, addr: int, proto: int, port) -> bool:
    for v, lo, hi, p, plo, phi in sels:
        if v == version and lo <= addr <= hi and (not p or p == proto):
            if port is None:
                if plo == 0 and phi == 0xFFFF:
                    return True
            elif plo <= port <= phi:
                return True
    return False


# ------------------------------------------------------------------ the SA
@functools.lru_cache(maxsize=GCM_CONTEXTS)
def _aesgcm(key: bytes) -> AESGCM:
    """The AES-GCM context of a key. A context holds 2.5 KB of OpenSSL state: one per
    direction of each of 20,000 children was half a card's memory per tunnel. The busiest
    keys keep theirs here; an idle child's is made again (1.7 us) when it next sends."""
    return AESGCM(key)


class EspSa:
    """Both directions of one tunnel-mode CHILD_SA; build it with ``from_child``."""

    __slots__ = (
        "spi_in", "spi_out", "suite", "aead", "icv_len", "lifetime_bytes", "lifetime_packets",
        "seq_out", "replay_top", "last_drop", "packets_in", "bytes_in", "packets_out",
        "bytes_out", "_drops",
        "_window", "_bitmap", "_mask", "_ours", "_theirs", "_ours_all", "_theirs_all",
        "_gcm_key_out", "_gcm_key_in", "_salt_out", "_salt_in", "_aes_out", "_aes_in", "_mac_out",
        "_mac_in", "_min_len", "_block_mask", "_trailers4", "_trailers6", "_hard_bytes",
        "_hard_packets", "_soft_bytes", "_soft_packets",
    )  # fmt: skip

    @classmethod
    def from_child(
        cls,
        child: ChildSa,
        *,
        lifetime_bytes: int | None = None,
        lifetime_packets: int | None = None,
        replay_window: int = 64,
    ) -> EspSa:
        """``replay_window`` 0 turns anti-replay off (RFC 4303 3.4.3 lets a receiver)."""
        if replay_window < 0:
            raise ValueError(f"replay window {replay_window}")
        for name, v in (("bytes", lifetime_bytes), ("packets", lifetime_packets)):
            if v is not None and v <= 0:
                raise ValueError(f"lifetime of {v} {name}")
        self = cls.__new__(cls)
        suite = child.suite
        self.spi_in, self.spi_out, self.suite = child.our_spi, child.their_spi, suite
        self.aead = suite.encr == Encr.AES_GCM_16
        (enc_out, integ_out), (enc_in, integ_in) = child.outbound, child.inbound
        if self.aead:
            self._gcm_key_out, self._salt_out = enc_out[:-4], enc_out[-4:]
            self._gcm_key_in, self._salt_in = enc_in[:-4], enc_in[-4:]
            self._aes_out = self._aes_in = self._mac_out = self._mac_in = None
            self.icv_len, block, iv = 16, 4, 8
        else:
            if suite.encr != Encr.AES_CBC or suite.integ not in _INTEG:
                raise ValueError(f"ESP suite {suite} not supported")
            algo, self.icv_len = _INTEG[suite.integ]
            self._aes_out, self._aes_in = algorithms.AES(enc_out), algorithms.AES(enc_in)
            self._mac_out, self._mac_in = HMAC(integ_out, algo()), HMAC(integ_in, algo())
            self._gcm_key_out = self._gcm_key_in = self._salt_out = self._salt_in = None
            block, iv = 16, 16
        # the shortest packet worth authenticating: header, IV, one block, ICV
        self._min_len = 8 + iv + max(block, 2) + self.icv_len
        self._block_mask = block - 1
        self._trailers4, self._trailers6 = _trailers(block)
        ours, theirs = (child.tsi, child.tsr) if child.initiator else (child.tsr, child.tsi)
        self._ours, self._ours_all = _selectors(ours)
        self._theirs, self._theirs_all = _selectors(theirs)
        self.seq_out = self.replay_top = self._bitmap = 0
        self.lifetime_bytes, self.lifetime_packets = lifetime_bytes, lifetime_packets
        self._window = replay_window
        (self._hard_bytes, self._hard_packets, self._soft_bytes, self._soft_packets,
         self._mask) = _limits(lifetime_bytes, lifetime_packets, replay_window)  # fmt: skip
        self.packets_in = self.bytes_in = self.packets_out = self.bytes_out = 0
        self._drops = None  # the drop counters that are not 0 (most children have none)
        self.last_drop = ""
        return self

    def __repr__(self) -> str:
        return (f"EspSa(in={self.spi_in.hex()}, out={self.spi_out.hex()}, {self.suite}, "
                f"seq_out={self.seq_out})")  # fmt: skip

    @property
    def replay_window(self) -> int:
        """Anti-replay window size in packets (0: off); fixed once built."""
        return self._window

    # -------------------------------------------------------------- accounting
    def _drop(self, counter: str, reason: str) -> None:
        if self._drops is None:
            self._drops = {}
        self._drops[counter] = self._drops.get(counter, 0) + 1
        self.last_drop = f"{counter}: {reason}"
        return None

    @property
    def soft_expired(self) -> bool:
        """90% of a lifetime used (both directions summed), or of the sequence numbers."""
        return (
            self.bytes_in + self.bytes_out >= self._soft_bytes
            or self.packets_in + self.packets_out >= self._soft_packets
            or self.seq_out >= SEQ_SOFT
        )

    @property
    def hard_expired(self) -> bool:
        return (
            self.bytes_in + self.bytes_out >= self._hard_bytes
            or self.packets_in + self.packets_out >= self._hard_packets
            or self.seq_out >= SEQ_MAX
        )

    def counters(self) -> dict:
        out = {
            "packets_in": self.packets_in,
            "bytes_in": self.bytes_in,
            "packets_out": self.packets_out,
            "bytes_out": self.bytes_out,
            "seq_out": self.seq_out,
            "replay_top": self.replay_top,
        }
        for name in DROPS:
            out[name] = getattr(self, name)
        return out

    # -------------------------------------------------------------- outbound
    def seal(self, inner: bytes, rand: Rand) -> bytes | None:
        """The ESP packet (SPI first) protecting the IPv4/IPv6 packet ``inner``, or None when
        it is refused (outside the selectors, sequence numbers or lifetime exhausted)."""
        h = _headers(inner)
        if h is None or h[6] != len(inner):
            return self._drop("dropped_invalid_out", "not an IPv4/IPv6 packet of its length")
        version, src, dst, proto, sport, dport, n = h
        if version not in self._ours_all and not _match(self._ours, version, src, proto, sport):
            return self._drop("dropped_ts_out", "source outside our traffic selectors")
        if version not in self._theirs_all and not _match(self._theirs, version, dst, proto, dport):
            return self._drop("dropped_ts_out", "destination outside the peer's selectors")
        seq = self.seq_out + 1
        if seq > SEQ_MAX:
            return self._drop("dropped_seq_overflow", "sequence number space used up")
        if (
            self.bytes_in + self.bytes_out >= self._hard_bytes
            or self.packets_in + self.packets_out >= self._hard_packets
        ):
            return self._drop("dropped_expired", "hard lifetime reached")
        header = _HDR.pack(self.spi_out, seq)
        trailer = (self._trailers4 if version == 4 else self._trailers6)[n & self._block_mask]
        if self.aead:
            iv = rand(8)
            gcm = _aesgcm(self._gcm_key_out)
            out = header + iv + gcm.encrypt(self._salt_out + iv, inner + trailer, header)
        else:
            iv = rand(16)
            enc = Cipher(self._aes_out, modes.CBC(iv)).encryptor()
            body = header + iv + enc.update(inner + trailer) + enc.finalize()
            mac = self._mac_out.copy()
            mac.update(body)
            out = body + mac.finalize()[: self.icv_len]
        self.seq_out = seq
        self.packets_out += 1
        self.bytes_out += n
        return out

    # -------------------------------------------------------------- inbound
    def open(self, packet: bytes) -> bytes | None:
        """The inner IPv4/IPv6 packet of an ESP packet (SPI first) from the peer, or None
        when it is dropped (the counter named in ``last_drop`` went up)."""
        try:
            return self._open(packet)
        except Exception as e:  # defence in depth: peer input never raises
            return self._drop("dropped_malformed", f"internal error {type(e).__name__}")

    def _open(self, packet: bytes) -> bytes | None:
        n = len(packet)
        if n < self._min_len:
            return self._drop("dropped_malformed", f"{n} bytes: too short")
        spi, seq = _HDR.unpack_from(packet)
        if spi != self.spi_in:
            return self._drop("dropped_spi", f"SPI {spi.hex()} is not ours")
        window = self._window
        if window:
            if not seq:
                return self._drop("dropped_replay", "sequence number 0")
            top = self.replay_top
            if seq <= top:
                diff = top - seq
                if diff >= window:
                    return self._drop("dropped_replay", f"{seq} left of the window ({top})")
                if self._bitmap >> diff & 1:
                    return self._drop("dropped_replay", f"{seq} seen before")
        if (
            self.bytes_in + self.bytes_out >= self._hard_bytes
            or self.packets_in + self.packets_out >= self._hard_packets
        ):
            return self._drop("dropped_expired", "hard lifetime reached")
        if self.aead:
            try:
                gcm = _aesgcm(self._gcm_key_in)
                plain = gcm.decrypt(self._salt_in + packet[8:16], packet[16:], packet[:8])
            except InvalidTag:
                return self._drop("dropped_auth", "AES-GCM tag mismatch")
        else:
            end = n - self.icv_len
            if (end - 24) % 16:
                return self._drop("dropped_malformed", "ciphertext not whole AES blocks")
            mac = self._mac_in.copy()
            mac.update(packet[:end])
            if not hmac.compare_digest(mac.finalize()[: self.icv_len], packet[end:]):
                return self._drop("dropped_auth", "ICV mismatch")
            dec = Cipher(self._aes_in, modes.CBC(packet[8:24])).decryptor()
            plain = dec.update(packet[24:end]) + dec.finalize()
        if window:  # authentic: now the window moves (RFC 4303 3.4.3)
            top = self.replay_top
            if seq > top:
                shift = seq - top
                self._bitmap = (self._bitmap << shift | 1) & self._mask if shift < window else 1
                self.replay_top = seq
            else:
                self._bitmap |= 1 << (top - seq)
        m = len(plain)
        pad, nh = plain[m - 2], plain[m - 1]
        end = m - 2 - pad
        if end < 0 or plain[end : m - 2] != _PADS[pad]:
            return self._drop("dropped_malformed", f"bad padding ({pad} octets)")
        if nh == NH_NONE:
            return self._drop("dropped_dummy", "dummy packet")
        if nh != NH_IPV4 and nh != NH_IPV6:
            return self._drop("dropped_malformed", f"Next Header {nh} in tunnel mode")
        inner = plain[:end]
        h = _headers(inner)
        want = 4 if nh == NH_IPV4 else 6
        if h is None or h[0] != want:
            return self._drop("dropped_malformed", f"inner packet is not IPv{want}")
        version, src, dst, proto, sport, dport, total = h
        if total != end:
            inner = inner[:total]  # TFC padding (RFC 4303 2.7)
        if version not in self._theirs_all and not _match(self._theirs, version, src, proto, sport):
            return self._drop("dropped_ts", "source outside the peer's traffic selectors")
        if version not in self._ours_all and not _match(self._ours, version, dst, proto, dport):
            return self._drop("dropped_ts", "destination outside our traffic selectors")
        self.packets_in += 1
        self.bytes_in += total
        return inner


def _drop_counter(name: str) -> property:
    return property(lambda self: self._drops.get(name, 0) if self._drops else 0)


for _name in DROPS:  # EspSa.dropped_spi ... read as attributes, counted by _drop
    setattr(EspSa, _name, _drop_counter(_name))
