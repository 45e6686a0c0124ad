"""The gateway as IKEv2 initiator: a crypto map brings an IKE SA up to a real strongSwan.

`crypto map M ikev2-ipv4` with a peer and a bind address: the supervisor picks one DPC that
holds the map's credentials to initiate it, the NPU binds the map's address and steers the
answers back to that card by the slot bits of our SPIi. charon is the responder (the core-side
SeGW of a backhaul). This kernel has no ESP, so charon answers the child in IKE_AUTH with
NO_PROPOSAL_CHOSEN (INTEROP.md): the gateway must keep the IKE SA and refuse the child cleanly.
When the initiating card reboots, another card takes the map over and brings a new IKE SA up.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from helpers import wait_until, write_topology
from strongswan import Charon
from test_e2e_strongswan import TOPO, _cert, free_udp_port, pem

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


def counters(ch) -> dict[int, dict]:
    rows = ch.exec("show card table")[0].data["cards"]
    return {r["slot"]: r.get("counters", {}) for r in rows if r["type"] == "dpc"}


def test_crypto_map_initiates_to_strongswan(chassis_factory, tmp_path):
    ca_key, gw_key, peer_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _cert("Lab Root", ca_key, "Lab Root", ca_key, ca=True)
    gw = _cert("segw.example.net", gw_key, "Lab Root", ca_key, san="segw.example.net")
    peer = _cert("core-segw.example.net", peer_key, "Lab Root", ca_key, san="core-segw.example.net")

    ch = chassis_factory(write_topology(tmp_path, TOPO))
    for name, data in {"ca.crt": pem(ca), "gw.crt": pem(gw), "gw.key": pem(gw_key)}.items():
        (ch.run.flash / name).write_bytes(data)
    gw_port, peer_port = free_udp_port(), free_udp_port()

    charon = Charon(tmp_path / "charon", peer_port)
    d = charon.swanctl_dir
    (d / "x509ca" / "ca.pem").write_bytes(pem(ca))
    (d / "x509" / "peer.pem").write_bytes(pem(peer))
    (d / "private" / "peer.pem").write_bytes(pem(peer_key))
    (d / "swanctl.conf").write_text("""
connections {
  segw {
    version = 2
    local_addrs = 127.0.0.1
    remote_addrs = 127.0.0.1
    proposals = aes256gcm16-prfsha256-ecp256
    mobike = no
    local {
      auth = pubkey
      certs = peer.pem
      id = core-segw.example.net
    }
    remote {
      auth = pubkey
      id = segw.example.net
    }
    children {
      c {
        local_ts = 10.0.0.0/8
        esp_proposals = aes256gcm16
      }
    }
  }
}
""")
    charon.start()
    try:
        loaded = charon.swanctl("--load-all")
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr
        res = ch.exec(
            "configure",
            "ca-certificate name lab-root pem url /flash/ca.crt",
            "certificate name segw pem url /flash/gw.crt private-key pem url /flash/gw.key",
            "context segw",
            "ipsec transform-set esp-gcm",
            "encryption aes-gcm-256",
            "exit",
            "ikev2-ikesa transform-set ike-gcm",
            "encryption aes-gcm-256",
            "group 19",
            "prf sha2-256",
            "exit",
            "crypto map to-core ikev2-ipv4",
            f"peer 127.0.0.1 port {peer_port}",
            f"bind address 127.0.0.1 port {gw_port}",
            "authentication local certificate",
            "authentication remote certificate",
            "certificate name segw",
            "ca-certificate list ca-cert-name lab-root",
            "ikev2-ikesa transform-set list ike-gcm",
            "payload backhaul match ipv4",
            "ipsec transform-set list esp-gcm",
            "tsr start-address 10.0.0.0 end-address 10.255.255.255",
            "end",
        )
        assert not any(r.error for r in res), [r.output for r in res if r.error]

        sas = wait_until(
            lambda: "ESTABLISHED" in (out := charon.swanctl("--list-sas").stdout) and out,
            20,
            what="charon's IKE SA",
        )
        assert "segw.example.net" in sas and "AES_GCM_16-256" in sas
        rows = wait_until(
            lambda: [r for r in ch.exec("show crypto ikev2-ikesa security-associations")[0]
                     .data["sas"] if r["state"] == "ESTABLISHED"],
            10,
            what="the gateway's IKE SA",
        )  # fmt: skip
        [row] = rows
        assert row["role"] == "initiator" and row["peer_id"] == "core-segw.example.net"
        assert row["local"] == f"127.0.0.1:{gw_port}" and row["remote"] == f"127.0.0.1:{peer_port}"
        owner = row["card"]
        # charon cannot install ESP here: it answers our child with NO_PROPOSAL_CHOSEN
        wait_until(lambda: counters(ch)[owner].get("ike_childrefused") == 1, 5,
                   what="the refused child at the card")  # fmt: skip
        c = counters(ch)[owner]
        assert c.get("ike_established") == 1 and not c.get("ike_internalerror"), c
        log = (ch.run.logs / f"dpc-{owner}.log").read_text()
        assert "crypto map segw/crypto-map/to-core: initiating to 127.0.0.1" in log
        assert "refused: NO_PROPOSAL_CHOSEN" in log
        assert "IKE SA up with core-segw.example.net" in log
        clog = charon.log()
        assert "10.0.0.0/8" in clog  # the payload's TSr reached charon
        assert "ESTABLISHED" in charon.swanctl("--list-sas").stdout  # still up

        # The initiating card reboots: another card takes the crypto map over.
        assert not ch.exec(f"card reboot {owner} -noconfirm")[0].error
        other = next(s for s in counters(ch) if s != owner)
        wait_until(
            lambda: any(r["card"] == other and r["state"] == "ESTABLISHED"
                        for r in ch.exec("show crypto ikev2-ikesa security-associations")[0]
                        .data["sas"]),
            20,
            what="the crypto map's IKE SA from the other card",
        )  # fmt: skip
        assert (
            f"initiating to 127.0.0.1:{peer_port}" in (ch.run.logs / f"dpc-{other}.log").read_text()
        )
    except AssertionError:
        print(charon.log()[-4000:])
        raise
    finally:
        charon.stop()
