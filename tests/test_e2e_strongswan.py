"""A real strongSwan (charon) as an eNodeB brings an IKE SA up against the simulated gateway.

charon initiates IKE_SA_INIT and IKE_AUTH with an EC certificate to the address a
wsg-service is bound to; the NPU steers the datagrams to a DPC, whose engine authenticates
charon against the template's CA list and answers with the gateway's certificate, fanned out
by the MIO. The first CHILD_SA is negotiated in IKE_AUTH too (the card narrows charon's TS and
allocates an ESP SPI with its slot in the top byte); this kernel has no ESP, so charon logs the
negotiated CHILD_SA, fails to install it and deletes it with an INFORMATIONAL, keeping the
IKE SA (INTEROP.md). With RSA-2048 and an intermediate, IKE_AUTH is fragmented both ways
(RFC 7383). The test checks all of it on both sides.
"""

from __future__ import annotations

import datetime as dt
import re
import socket
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from helpers import wait_until, write_topology
from strongswan import Charon

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

TOPO = """\
name: swan
platform: asr5500
cards:
  5: {type: mio, role: active}
  1: {type: dpc, role: active}
  2: {type: dpc, role: active}
"""


_handed_out: set[int] = set()


def free_udp_port() -> int:
    """A UDP port that is free together with the next one (charon takes port and port + 1
    for NAT-T), never handed out before in this process: two peers of one test must not
    collide on port + 1."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            if port >= 65000 or {port, port + 1, port - 1} & _handed_out:
                continue
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
                    b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        _handed_out.update({port, port + 1})
        return port


def _cert(subject, key, issuer, issuer_key, *, ca=False, san=None):
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def pem(obj) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.mark.parametrize(
    "addr, remote_ts, chain",
    [
        ("127.0.0.1", "10.0.0.0/8", "ec-flat"),
        ("::1", "fd00::/8", "ec-flat"),
        # The reference's CA-chaining scenarios, RSA-2048: one side under an intermediate CA.
        ("127.0.0.1", "10.0.0.0/8", "rsa-gateway-under-intermediate"),
        ("127.0.0.1", "10.0.0.0/8", "rsa-enodeb-under-intermediate"),
        # The gateway on port 500: charon (MOBIKE on) floats IKE_AUTH to 4500 (RFC 7296 2.23)
        ("127.0.0.1", "10.0.0.0/8", "ec-port500"),
    ],
    ids=["ipv4", "ipv6", "rsa-gw-intermediate", "rsa-enb-intermediate", "port500-float"],
)
def test_strongswan_brings_an_ike_sa_up(chassis_factory, tmp_path, addr, remote_ts, chain):
    if chain.startswith("rsa"):
        keys = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(4)]
    else:
        keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(4)]
    ca_key, int_key, gw_key, enb_key = keys
    ca = _cert("Lab Root", ca_key, "Lab Root", ca_key, ca=True)
    inter = _cert("Lab Intermediate", int_key, "Lab Root", ca_key, ca=True)
    under = ("Lab Intermediate", int_key)
    gw_by = under if chain == "rsa-gateway-under-intermediate" else ("Lab Root", ca_key)
    enb_by = under if chain == "rsa-enodeb-under-intermediate" else ("Lab Root", ca_key)
    gw = _cert("segw.example.net", gw_key, *gw_by, san="segw.example.net")
    enb = _cert("enb1.example.net", enb_key, *enb_by, san="enb1.example.net")

    ch = chassis_factory(write_topology(tmp_path, TOPO))
    files = {"ca.crt": pem(ca), "int.crt": pem(inter), "gw.crt": pem(gw), "gw.key": pem(gw_key)}
    for name, data in files.items():
        (ch.run.flash / name).write_bytes(data)
    gw_port, enb_port = (500 if chain == "ec-port500" else free_udp_port()), free_udp_port()
    res = ch.exec(
        "configure",
        "ca-certificate name lab-root pem url /flash/ca.crt",
        "ca-certificate name lab-int pem url /flash/int.crt",
        "certificate name segw pem url /flash/gw.crt private-key pem url /flash/gw.key",
        "context segw",
        "crypto template tmpl ikev2-dynamic",
        "authentication local certificate",
        "authentication remote certificate",
        "certificate name segw",
        "ca-certificate list ca-cert-name lab-root",
        "exit",
        "wsg-service svc",
        f"bind address {addr} port {gw_port} crypto-template tmpl",
        "end",
    )
    assert not any(r.error for r in res), [r.output for r in res if r.error]

    charon = Charon(tmp_path / "charon", enb_port)
    d = charon.swanctl_dir
    (d / "x509ca" / "ca.pem").write_bytes(pem(ca))
    if chain == "rsa-enodeb-under-intermediate":  # charon sends its intermediate
        (d / "x509ca" / "int.pem").write_bytes(pem(inter))
    # Otherwise charon does not know the intermediate: the gateway must send it (CERT).
    (d / "x509" / "enb.pem").write_bytes(pem(enb))
    (d / "private" / "enb.pem").write_bytes(pem(enb_key))
    (d / "swanctl.conf").write_text(f"""
connections {{
  segw {{
    version = 2
    local_addrs = {addr}
    remote_addrs = {addr}
    local_port = {enb_port}
    remote_port = {gw_port}
    proposals = aes256gcm16-prfsha256-ecp256
    mobike = {"yes" if chain == "ec-port500" else "no"}
    dpd_delay = 1s
    local {{
      auth = pubkey
      certs = enb.pem
      id = enb1.example.net
    }}
    remote {{
      auth = pubkey
      id = segw.example.net
    }}
    children {{
      c {{
        remote_ts = {remote_ts}
        esp_proposals = aes256gcm16
      }}
    }}
  }}
}}
""")
    charon.start()
    try:
        loaded = charon.swanctl("--load-all")
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr
        # The serving DPC is ready once the template is: wait for the gateway to listen.
        wait_until(lambda: ch.status().get("npu") is not None, 5, what="the NPU")
        time.sleep(0.5)
        charon.swanctl("--initiate", "--child", "c", "--timeout", "15", timeout=30)
        sas = wait_until(
            lambda: "ESTABLISHED" in (out := charon.swanctl("--list-sas").stdout) and out,
            15,
            what="charon's IKE SA",
        )
        assert "segw.example.net" in sas and "AES_GCM_16-256" in sas
        if chain == "rsa-gateway-under-intermediate":
            assert 'received issuer cert "CN=Lab Intermediate"' in charon.log()
            # RFC 7383 both ways: two RSA-2048 certificates do not fit in 1280 octets
            assert "generating IKE_AUTH request 1 [ EF(1/2) ]" in charon.log()
            assert "reassembled fragmented IKE message" in charon.log()
        if chain == "ec-port500":  # IKE_AUTH went to the NAT-T port and was answered there
            assert "to 127.0.0.1[4500]" in charon.log()
            assert "received packet: from 127.0.0.1[4500]" in charon.log()

        def counters():
            rows = ch.exec("show card table")[0].data["cards"]
            return {r["slot"]: r.get("counters", {}) for r in rows if r["type"] == "dpc"}

        # The cards report their counters each heartbeat interval.
        wait_until(
            lambda: sum(c.get("ike_established", 0) for c in counters().values()) == 1,
            5,
            what="the card's SA",
        )
        serving = [slot for slot, c in counters().items() if c.get("ike_sas")]
        assert len(serving) == 1  # one DPC holds it: the NPU steered IKE_AUTH by the SPI's slot
        log = (ch.run.logs / f"dpc-{serving[0]}.log").read_text()
        assert "IKE SA up with enb1.example.net" in log
        shown = ch.exec("show crypto ikev2-ikesa security-associations")[0]
        [row] = shown.data["sas"]
        assert (
            row["card"] == serving[0]
            and row["state"] == "ESTABLISHED"
            and row["role"] == "responder"
        )
        assert (
            row["peer_id"] == "enb1.example.net"
            and row["local"] == f"{addr}:{4500 if gw_port == 500 else gw_port}"
        )
        assert "enb1.example.net" in shown.output
        summary = ch.exec("show crypto ikev2-ikesa security-associations summary")[0]
        assert summary.data["established"] == 1 and summary.data["per_card"][str(serving[0])] == 1

        # The first CHILD_SA: negotiated by the card, then deleted by charon (no ESP here).
        wait_until(
            lambda: counters()[serving[0]].get("ike_childdeleted", 0) == 1,
            5,
            what="charon's CHILD_SA delete at the card",
        )
        c = counters()[serving[0]]
        assert c.get("ike_childestablished") == 1 and not c.get("ike_childrefused"), c
        log = (ch.run.logs / f"dpc-{serving[0]}.log").read_text()
        up = [line for line in log.splitlines() if "CHILD_SA up with AES_GCM_16_256" in line]
        assert len(up) == 1 and f"{addr} === {remote_ts}" in up[0], log[-2000:]
        our_spi = up[0].split("our SPI ")[1].split(",")[0]
        their_spi = up[0].split("their SPI ")[1].split(",")[0]
        assert int(our_spi[:2], 16) == serving[0]  # the NPU steers ESP by the slot byte
        clog = charon.log()
        assert "selected proposal: ESP:AES_GCM_16_256/NO_EXT_SEQ" in clog
        assert f"unable to add SAD entry with SPI {our_spi}" in clog  # its outbound = our inbound
        assert "failed to establish CHILD_SA, keeping IKE_SA" in clog
        assert f"sending DELETE for ESP CHILD_SA with SPI {their_spi}" in clog
        assert "parsed INFORMATIONAL response 2 [ D ]" in clog  # we deleted our half too
        assert "ESTABLISHED" in charon.swanctl("--list-sas").stdout  # the IKE SA stays up

        # Liveness: charon's DPD (an empty INFORMATIONAL each second) is answered by the card.
        dpd = re.compile(r"parsed INFORMATIONAL response \d+ \[ \]")
        wait_until(lambda: dpd.search(charon.log()), 10, what="a DPD answered")
        # Delete: charon closes the IKE SA; the card drops it and says so.
        done = charon.swanctl("--terminate", "--ike", "segw", "--timeout", "10", timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr
        wait_until(
            lambda: counters()[serving[0]].get("ike_deleted", 0) == 1,
            5,
            what="the delete at the card",
        )
        assert ch.exec("show crypto ikev2-ikesa security-associations")[0].data["sas"] == []
    except AssertionError:
        print(charon.log()[-4000:])
        print("chassis status:", ch.status())
        raise
    finally:
        charon.stop()
