"""cards.ike: certificates as Hash and URL (RFC 7296 3.6, 3.10.1; `allow-cert-enc cert-hash-url`).

eNodeB                                                     SeGW (allows Hash and URL)
HDR, SAi1, KEi, Ni  -->
<--  HDR, SAr1, KEr, Nr, CERTREQ, N(HTTP_CERT_LOOKUP_SUPPORTED)
HDR, SK{IDi, CERT(12: SHA-1 | http://pki.example/enb1.der), AUTH, ...}  -->
                             (the SeGW fetches the URL, checks the SHA-1, then answers)
<--  HDR, SK{IDr, CERT, AUTH, ...}
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import serialization
from test_ike_engine import Pair, _inner, _inner_dead, config, gw_config, no_internal_errors, pki

from cards.ike.const import CertEncoding, NotifyType
from cards.ike.events import AuthFailed, Dropped, Established, FetchCertificate
from cards.ike.message import CertPayload, NotifyPayload

URL = "http://pki.example/enb1.der"


def der(name: str) -> bytes:
    return pki()[name].public_bytes(serialization.Encoding.DER)


def feed(pair: Pair, side: str, outs) -> None:
    """Deliver what an endpoint returned outside a datagram (a resolved fetch)."""
    pair.run(pair._split(side, outs))


def parked_pair(gw_allows=True, enb_url=URL) -> Pair:
    """Run up to the gateway parking IKE_AUTH for its fetch."""
    enb = config("enb", own_cert_url=enb_url, hash_and_url=True)
    pair = Pair(enb, gw_config(hash_and_url=gw_allows))
    pair.run(pair.start())
    return pair


def test_the_gateway_fetches_the_enodebs_certificate():
    pair = parked_pair()
    (fetch,) = pair.of("r", FetchCertificate)
    assert fetch.url == URL and fetch.sha1 == hashlib.sha1(der("enb")).digest()
    assert fetch.max_bytes == 16384 and not pair.of("r", Established)
    sent = [p for p in _inner(pair, 2) if isinstance(p, CertPayload)]
    assert sent[0].encoding == CertEncoding.HASH_URL_X509 and sent[0].data[20:] == URL.encode()
    feed(pair, "r", pair.r.resolve(fetch.my_spi, URL, der("enb"), pair.now))
    assert pair.of("r", Established) and pair.of("i", Established)
    no_internal_errors(pair)


def test_a_copy_of_the_parked_request_is_dropped_not_processed_twice():
    pair = parked_pair()
    request = pair.wire[2]
    pair.run([request])  # the eNodeB retransmits while the fetch runs
    assert any("still being processed" in d.reason for d in pair.of("r", Dropped))
    assert len(pair.of("r", FetchCertificate)) == 1
    fetch = pair.of("r", FetchCertificate)[0]
    feed(pair, "r", pair.r.resolve(fetch.my_spi, URL, der("enb"), pair.now))
    assert len(pair.of("r", Established)) == 1


def test_wrong_or_missing_bytes_fail_the_authentication():
    for body in (der("gw"), None, der("enb") + bytes(16384)):  # other cert, failed, too big
        pair = parked_pair()
        (fetch,) = pair.of("r", FetchCertificate)
        feed(pair, "r", pair.r.resolve(fetch.my_spi, URL, body, pair.now))
        (failed,) = pair.of("r", AuthFailed)
        assert "not fetched or not its hash" in failed.reason
        assert not pair.of("i", Established)


def test_not_announced_unless_the_template_allows_it():
    pair = Pair(config("enb", own_cert_url=URL, hash_and_url=True), gw_config()).established()
    assert not pair.of("r", FetchCertificate)  # no HTTP_CERT_LOOKUP_SUPPORTED: X.509 sent
    sent = [p for p in _inner(pair, 2) if isinstance(p, CertPayload)]
    assert all(c.encoding == CertEncoding.X509_SIGNATURE for c in sent)


def test_a_hash_and_url_the_template_does_not_allow_is_refused(monkeypatch):
    from cards.ike.tasks import auth

    # an eNodeB that sends Hash and URL although the gateway never announced it
    monkeypatch.setattr(auth, "_own", _always_hash_url(auth._own))
    pair = Pair(config("enb", own_cert_url=URL), gw_config()).established_or_not()
    assert "not allowed by the template" in pair.of("r", AuthFailed)[0].reason
    assert NotifyType.AUTHENTICATION_FAILED in [
        n.type for n in _inner_dead(pair, 3) if isinstance(n, NotifyPayload)]  # fmt: skip


def _always_hash_url(own):
    def patched(sa, id_ptype):
        sa.peer_http_lookup = sa.peer_http_lookup or sa.initiator
        return own(sa, id_ptype)

    return patched


def test_the_gateway_sends_its_own_certificate_as_hash_and_url():
    gw_url = "http://pki.example/segw.der"
    enb = config("enb", hash_and_url=True)
    pair = Pair(enb, gw_config(own_cert_url=gw_url, hash_and_url=True))
    pair.run(pair.start())
    (fetch,) = pair.of("i", FetchCertificate)  # the eNodeB fetches the gateway's
    assert fetch.url == gw_url and pair.of("r", Established)
    feed(pair, "i", pair.i.resolve(fetch.my_spi, gw_url, der("gw"), pair.now))
    assert pair.of("i", Established)
    no_internal_errors(pair)
