"""cards.ike: NAT traversal (RFC 7296 2.23, RFC 3948), in-memory pairs with a NAT between.

eNodeB 192.168.1.7:500 --NAT--> 198.51.100.7:31000 ------------> SeGW 192.0.2.1:500
HDR, SAi1, KEi, Ni, N(NAT_D_SRC = hash(192.168.1.7:500)), N(NAT_D_DST)  -->
<--  HDR, SAr1, KEr, Nr, N(NAT_D_SRC), N(NAT_D_DST = hash(198.51.100.7:31000))
both sides see the NAT; the eNodeB floats: 192.168.1.7:4500 -NAT-> 198.51.100.7:31001
0000 | HDR, SK{IDi, CERT, AUTH, ...}  (non-ESP marker on 4500)  -->  SeGW 192.0.2.1:4500
<--  0000 | HDR, SK{...}  to 198.51.100.7:31001, the translated source
"""

from __future__ import annotations

from test_ike_engine import GW, Pair, config, gw_config, no_internal_errors

from cards.ike.events import Established, Send
from cards.ike.message import NON_ESP_MARKER

PRIVATE, PUBLIC = "192.168.1.7", "198.51.100.7"
OUT = {500: 31000, 4500: 31001}  # the NAT's port mappings
BACK = {v: k for k, v in OUT.items()}


class NatPair(Pair):
    """The eNodeB's datagrams are source-translated; the gateway's answers translated back."""

    def deliver(self, send: Send) -> list[Send]:
        if send.src[0] == PRIVATE:  # outbound through the NAT
            send = Send(send.data, (PUBLIC, OUT[send.src[1]]), send.dst)
            self.wire.append(send)
            return self._split("r", self.r.receive(send.data, send.src, send.dst, self.now))
        if send.dst[0] == PUBLIC:  # inbound through the NAT
            send = Send(send.data, send.src, (PRIVATE, BACK[send.dst[1]]))
            self.wire.append(send)
            return self._split("i", self.i.receive(send.data, send.src, send.dst, self.now))
        raise AssertionError(f"unexpected datagram {send.src} -> {send.dst}")


def nat_pair() -> NatPair:
    return NatPair(config("enb"), gw_config(), enb_addr=(PRIVATE, 500), gw_addr=GW)


def test_nat_detected_and_the_enodeb_floats_to_4500():
    pair = nat_pair().established()
    gw, enb = pair.sa("r"), pair.sa("i")
    assert gw.nat_remote and not gw.nat_local  # the peer is behind a NAT
    assert enb.nat_local and not enb.nat_remote  # we are behind one
    init, auth_req, auth_resp = pair.wire[0], pair.wire[2], pair.wire[3]
    assert init.dst == GW and init.src == (PUBLIC, 31000)
    assert auth_req.dst == ("192.0.2.1", 4500) and auth_req.src == (PUBLIC, 31001)
    assert auth_req.data.startswith(NON_ESP_MARKER)  # RFC 3948 framing on 4500
    assert auth_resp.src == ("192.0.2.1", 4500) and auth_resp.dst == (PRIVATE, 4500)
    assert gw.peer == (PUBLIC, 31001) and gw.local == ("192.0.2.1", 4500)
    assert pair.of("i", Established) and pair.of("r", Established)
    no_internal_errors(pair)


def test_the_nat_mapping_changes_and_the_gateway_follows():
    pair = nat_pair().established()
    OUT[4500] = 40000  # the NAT rebinds (RFC 7296 2.23: follow the authenticated source)
    BACK[40000] = 4500
    try:
        pair.run(pair.i.check_liveness(pair.sa("i").spi_i, pair.now))
        assert pair.sa("r").peer == (PUBLIC, 40000)
        (probe,) = pair.r.check_liveness(pair.sa("r").spi_r, pair.now)
        assert probe.dst == (PUBLIC, 40000)  # sent to the new mapping, and answered
        pair.run([probe])
        assert pair.sa("i").recv_mid == 1 and pair.sa("r").send_mid == 1
    finally:
        OUT[4500] = 31001
        BACK.pop(40000)
    no_internal_errors(pair)


def test_no_nat_no_float():
    pair = Pair(config("enb"), gw_config()).established()
    assert not (pair.sa("r").nat_remote or pair.sa("r").nat_local)
    assert all(s.dst[1] == 500 and s.src[1] == 500 for s in pair.wire)
