"""`chassis capture`: the NPU's datagrams in a pcapng file, and the SA keys that decrypt them.

The backplane's NPU hands every gateway datagram, received or sent, to a `Capture`, which
wraps it in an IPv4 or IPv6 + UDP header (lengths and checksums filled in; LINKTYPE_RAW) and
an Enhanced Packet Block with a microsecond timestamp and its direction. Blocks are buffered
and written by the event loop in chunks (at FLUSH_BYTES, every FLUSH_S and at stop): a write
into the page cache of a few hundred KiB, never a wait for the disk. The file is 0600 and
stops growing at its size limit (1 GiB unless told); packets past it are counted, not written.

The key file (`--keys`) is written by the client, never by the backplane, from the keys the
supervisor gathers from the cards (`ike.keys`): one line per SA, each line a `tshark -o`
argument (`uat:ikev2_decryption_table:...`, `uat:esp_sa:...`); the part after the second
colon is the record of Wireshark's UAT file of that name.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import struct
import time
from pathlib import Path

from chassis.ipc.rundir import atomic_write

log = logging.getLogger("capture")

MAX_BYTES = 1 << 30  # 1 GiB
FLUSH_BYTES = 256 * 1024
FLUSH_S = 0.5
LINKTYPE_RAW = 101  # each packet starts with its IPv4 or IPv6 header
SNAPLEN = 262144
APPLICATION = "staros-segw-sim chassis capture"

INBOUND, OUTBOUND = 1, 2  # epb_flags direction bits (pcapng, section 4.3.1)


class CaptureError(Exception):
    """A capture that cannot start (bad path, one already running)."""


# ---------------------------------------------------------------------- IP + UDP headers
def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): a one's complement sum of 16-bit words is the
    big-endian number mod 0xFFFF (65536 = 1 mod 65535), computed in C by int.from_bytes."""
    if len(data) % 2:
        data += b"\0"
    total = int.from_bytes(data, "big") % 0xFFFF
    if total == 0 and any(data):
        total = 0xFFFF  # one's complement "negative zero": the words summed to 0xFFFF
    return 0xFFFF - total


def ip_udp(src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> bytes:
    """An IPv4 or IPv6 packet holding one UDP datagram, lengths and checksums filled in."""
    s, d = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
    if s.version != d.version:
        raise ValueError(f"{s} and {d}: different address families")
    n = 8 + len(payload)
    udp = struct.pack("!HHH", int(src[1]), int(dst[1]), n)
    if s.version == 4:
        pseudo = s.packed + d.packed + struct.pack("!xBH", 17, n)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + n, 0, 0x4000, 64, 17, 0, s.packed, d.packed)
        ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    else:
        pseudo = s.packed + d.packed + struct.pack("!I3xB", n, 17)
        ip = struct.pack("!IHBB16s16s", 6 << 28, n, 17, 64, s.packed, d.packed)
    # RFC 768: a computed 0 is sent as 0xFFFF (0 means "no checksum", forbidden over IPv6)
    return ip + udp + struct.pack("!H", checksum(pseudo + udp + payload) or 0xFFFF) + payload


# ---------------------------------------------------------------------- pcapng blocks
def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad4(value)


def _block(kind: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", kind, length) + body + struct.pack("<I", length)


END_OF_OPTIONS = b"\0\0\0\0"


def section_header(application: str = APPLICATION) -> bytes:
    """SHB: little-endian byte-order magic, version 1.0, section length unknown (-1)."""
    options = _option(4, application.encode()) + END_OF_OPTIONS  # shb_userappl
    return _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + options)


def interface_description(linktype: int = LINKTYPE_RAW, name: str = "npu") -> bytes:
    """IDB: one interface, timestamps in microseconds (if_tsresol 6)."""
    options = _option(2, name.encode()) + _option(9, b"\x06") + END_OF_OPTIONS
    return _block(1, struct.pack("<HHI", linktype, 0, SNAPLEN) + options)


def enhanced_packet(ts_us: int, packet: bytes, direction: int = 0) -> bytes:
    """EPB on interface 0; ``direction`` INBOUND or OUTBOUND goes into epb_flags."""
    head = struct.pack("<IIIII", 0, ts_us >> 32, ts_us & 0xFFFFFFFF, len(packet), len(packet))
    options = _option(2, struct.pack("<I", direction)) + END_OF_OPTIONS if direction else b""
    return _block(6, head + _pad4(packet) + options)


# ---------------------------------------------------------------------- the capture file
class Capture:
    """One pcapng file being written; ``record`` is the NPU's tap."""

    def __init__(self, path: Path | str, max_bytes: int = MAX_BYTES, loop=None) -> None:
        self.path, self.max_bytes, self.loop = Path(path), int(max_bytes), loop
        head = section_header() + interface_description()
        if self.max_bytes < len(head):
            raise CaptureError(f"capture size limit {self.max_bytes} B is below {len(head)} B")
        try:
            self.fd = os.open(
                self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600
            )
        except OSError as exc:
            raise CaptureError(f"cannot write capture file {self.path}: {exc.strerror}") from None
        os.fchmod(self.fd, 0o600)  # also when the file existed with another mode
        self.started = time.time()
        self.buffer = bytearray(head)
        self.size = len(head)  # what the file holds once the buffer is written
        self.packets = self.dropped = 0
        self.full = False
        self.error = ""
        self._timer = None
        self.flush()

    @property
    def open(self) -> bool:
        return self.fd is not None

    def record(self, src: tuple[str, int], dst: tuple[str, int], data: bytes, outbound: bool):
        """Add one datagram (src -> dst); past the size limit it is only counted."""
        if self.fd is None or self.full:
            self.dropped += 1
            return
        try:
            block = enhanced_packet(
                time.time_ns() // 1000, ip_udp(src, dst, data), OUTBOUND if outbound else INBOUND
            )
        except ValueError as exc:  # an address that is not IP (cannot happen on UDP sockets)
            log.debug("capture: %s -> %s not recorded: %s", src, dst, exc)
            self.dropped += 1
            return
        if self.size + len(block) > self.max_bytes:
            self.full = True
            self.dropped += 1
            log.warning("capture %s reached its limit of %d bytes after %d packets: "
                        "later packets are not written", self.path, self.max_bytes, self.packets)  # fmt: skip
            return
        self.buffer += block
        self.size += len(block)
        self.packets += 1
        if len(self.buffer) >= FLUSH_BYTES:
            self.flush()
        elif self._timer is None and self.loop is not None:
            self._timer = self.loop.call_later(FLUSH_S, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.fd is None or not self.buffer:
            return
        view = memoryview(self.buffer)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as exc:  # disk full, I/O error: the file ends at its last whole block
            self.error = f"write failed: {exc.strerror}"
            log.error("capture %s: %s; capture stopped", self.path, self.error)
            self.size -= len(view)
            self.dropped += 1
            self._close_fd()
        finally:
            view.release()
            self.buffer.clear()

    def _close_fd(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def close(self) -> dict:
        """Write what is buffered and close the file; returns the stats."""
        self.flush()
        self._close_fd()
        return self.stats()

    def stats(self) -> dict:
        return {
            "path": str(self.path),
            "running": self.fd is not None,
            "started": self.started,
            "seconds": round(time.time() - self.started, 3),
            "packets": self.packets,
            "bytes": self.size,
            "max_bytes": self.max_bytes,
            "dropped": self.dropped,
            "full": self.full,
            "error": self.error,
        }


# ---------------------------------------------------------------------- key file
# Wireshark 4.0's names (packet-isakmp.c, packet-ipsec.c), by IANA transform ID.
IKE_ENCR = {12: "AES-CBC-{bits} [RFC3602]", 20: "AES-GCM-{bits} with 16 octet ICV [RFC5282]"}
IKE_INTEG = {0: "NONE [RFC4306]", 12: "HMAC_SHA2_256_128 [RFC4868]",
             13: "HMAC_SHA2_384_192 [RFC4868]", 14: "HMAC_SHA2_512_256 [RFC4868]"}  # fmt: skip
ESP_ENCR = {12: "AES-CBC [RFC3602]", 20: "AES-GCM with 16 octet ICV [RFC4106]"}
ESP_INTEG = {0: "NULL", 12: "HMAC-SHA-256-128 [RFC4868]", 13: "HMAC-SHA-384-192 [RFC4868]",
             14: "HMAC-SHA-512-256 [RFC4868]"}  # fmt: skip
KEYS_HEADER = (
    "# chassis capture keys: each line is a tshark -o argument; the text after the second\n"
    "# colon is a record of Wireshark's UAT file of that name (ikev2_decryption_table, esp_sa).\n"
    "esp.enable_encryption_decode:TRUE\n"
)


def _q(text: str) -> str:
    return f'"{text}"'


def ike_line(sa: dict) -> str | None:
    """An ikev2_decryption_table record: SPIi, SPIr, SK_ei, SK_er, encryption, SK_ai, SK_ar,
    integrity. None for a suite Wireshark has no name for."""
    encr, integ = IKE_ENCR.get(sa["encr"]), IKE_INTEG.get(sa["integ"])
    if encr is None or integ is None:
        return None
    fields = [sa["spi_i"], sa["spi_r"], sa["sk_ei"], sa["sk_er"],
              _q(encr.format(bits=sa["key_bits"])), sa["sk_ai"], sa["sk_ar"], _q(integ)]  # fmt: skip
    return "uat:ikev2_decryption_table:" + ",".join(fields)


def esp_lines(sa: dict) -> list[str]:
    """Two esp_sa records per CHILD_SA (peer -> gateway with our SPI, gateway -> peer with
    theirs): protocol, source, destination, SPI, encryption, key, authentication, key."""
    out = []
    local, peer = sa["local"][0], sa["peer"][0]
    proto = "IPv4" if ipaddress.ip_address(local).version == 4 else "IPv6"
    for child in sa.get("children", []):
        encr, integ = ESP_ENCR.get(child["encr"]), ESP_INTEG.get(child["integ"])
        if encr is None or integ is None:
            continue
        for src, dst, spi, (ekey, akey) in (
            (peer, local, child["our_spi"], child["inbound"]),
            (local, peer, child["their_spi"], child["outbound"]),
        ):
            fields = [_q(proto), _q(src), _q(dst), _q(f"0x{spi}"), _q(encr), _q(f"0x{ekey}"),
                      _q(integ), _q(f"0x{akey}" if akey else "")]  # fmt: skip
            out.append("uat:esp_sa:" + ",".join(fields))
    return out


class KeyFile:
    """The key file of one capture: every SA seen while it ran (SAs come and go; a line once
    written stays), rewritten whole (temp file 0600, rename) when something new turns up."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.ike: dict[tuple[str, str], str] = {}
        self.esp: dict[str, str] = {}
        self.write()

    def add(self, sas: list[dict]) -> bool:
        """Merge the SAs the cards reported; write the file if a line is new."""
        before = (len(self.ike), len(self.esp))
        for sa in sas:
            line = ike_line(sa)
            if line is not None:
                self.ike[(sa["spi_i"], sa["spi_r"])] = line
            for esp in esp_lines(sa):
                self.esp[esp] = esp
        changed = (len(self.ike), len(self.esp)) != before
        if changed:
            self.write()
        return changed

    def write(self) -> None:
        text = KEYS_HEADER + "".join(f"{x}\n" for x in [*self.ike.values(), *self.esp.values()])
        try:
            atomic_write(self.path, text.encode(), 0o600)
        except OSError as exc:
            raise CaptureError(f"cannot write key file {self.path}: {exc.strerror}") from None
