"""cards.ike + cards.pki.revocation: IKE_AUTH waits for OCSP and CRLs (in-memory pairs).

eNodeB                                        SeGW (`ocsp [nonce]`, `ca-crl list ...`)
HDR, SK{IDi, CERT, AUTH, ...}  -->
                           chain, ID and AUTH verified; then (CheckOcsp) the responder,
                           (FetchCrl) the CDP: the request is parked, its copies dropped
<--  HDR, SK{IDr, CERT, AUTH, ...}   or   <--  HDR, SK{N(AUTHENTICATION_FAILED)}

The OCSP answers here are built with cryptography's OCSPResponseBuilder and handed to the
engine as the runner would; `openssl ocsp` as a real responder is in test_ocsp.py and the
end-to-end tests.
"""

from __future__ import annotations

import datetime as dt
import functools

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID
from test_ike_engine import WALL, Pair, config, gw_config, key, no_internal_errors, pki

from cards.crls import CrlEntry, CrlStore
from cards.ike.events import (
    AuthFailed,
    CheckOcsp,
    Dropped,
    Established,
    FetchCrl,
    RevocationChecked,
)
from cards.pki.revocation import Policy
from chassis.ipc.crl_index import CrlIndex, build

OCSP_URL = "http://ocsp.lab.example/"
CDP_URL = "http://crl.lab.example/root.crl"
HOUR = dt.timedelta(hours=1)


@functools.cache
def enb(aia: bool = True, cdp: bool = False) -> x509.Certificate:
    """An eNodeB certificate from the test root, with an OCSP URL and/or a CDP."""
    root = pki()["root"]
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "enb1.example.net")]))
        .issuer_name(root.subject)
        .public_key(key("enb").public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(WALL - 30 * 24 * HOUR)
        .not_valid_after(WALL + 365 * 24 * HOUR)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("enb1.example.net")]), critical=False
        )
    )
    if aia:
        desc = x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(OCSP_URL)
        )
        b = b.add_extension(x509.AuthorityInformationAccess([desc]), critical=False)
    if cdp:
        point = x509.DistributionPoint([x509.UniformResourceIdentifier(CDP_URL)], None, None, None)
        b = b.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    return b.sign(key("root"), hashes.SHA256())


def enb_config(cert: x509.Certificate):
    from cards.ike.config import Credentials

    cfg = config("enb")
    return type(cfg)(**{**cfg.__dict__, "credentials": Credentials(cert, key("enb"), ())})


def ocsp_answer(cert, status: str, nonce: bytes | None = None) -> bytes:
    root = pki()["root"]
    states = {"good": ocsp.OCSPCertStatus.GOOD, "revoked": ocsp.OCSPCertStatus.REVOKED,
              "unknown": ocsp.OCSPCertStatus.UNKNOWN}  # fmt: skip
    b = ocsp.OCSPResponseBuilder().add_response(
        cert=cert, issuer=root, algorithm=hashes.SHA1(), cert_status=states[status],
        this_update=WALL - HOUR, next_update=WALL + HOUR,
        revocation_time=WALL - 2 * HOUR if status == "revoked" else None,
        revocation_reason=x509.ReasonFlags.key_compromise if status == "revoked" else None,
    ).responder_id(ocsp.OCSPResponderEncoding.HASH, root)  # fmt: skip
    if nonce is not None:
        b = b.add_extension(x509.OCSPNonce(nonce), critical=False)
    return b.sign(key("root"), hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def crl_entry(name: str | None, serials: list[int], *, url: str = "file:/flash/root.crl",
              next_update: dt.datetime | None = None, error: str | None = None) -> CrlEntry:  # fmt: skip
    root = pki()["root"]
    return CrlEntry(
        name=name, url=url, version=1, issuer=root.subject.public_bytes(),
        issuer_key_sha1=x509.SubjectKeyIdentifier.from_public_key(root.public_key()).digest,
        this_update=(WALL - HOUR).timestamp(),
        next_update=(next_update or WALL + HOUR).timestamp(), count=len(serials),
        index=None if error else CrlIndex(build(serials)), error=error,
    )  # fmt: skip


def gateway(store: CrlStore, **policy) -> Pair:
    return gw_config(revocation=Policy(**policy), crl_store=store)


def parked(cert, store: CrlStore, **policy) -> Pair:
    pair = Pair(enb_config(cert), gateway(store, **policy))
    pair.run(pair.start())
    return pair


def answer(pair: Pair, kind: str, url: str, body=None, error=None) -> None:
    spi = next(iter(pair.r.sas))
    pair.run(pair._split("r", pair.r.revocation_answer(spi, kind, url, body, error, pair.now)))


# --- the matrix: OCSP {good, revoked, unknown, error, no URL} x CRL {good, revoked, absent,
# error}. A good OCSP answer decides; revoked is never overridden; otherwise the CRL decides,
# and with no CRL able to decide the peer is refused (fail closed).
OCSP_CASES = ("good", "revoked", "unknown", "error", "no-url")
CRL_CASES = ("good", "revoked", "absent", "error")


def expected(ocsp_case: str, crl_case: str) -> bool:
    if ocsp_case == "good":
        return True
    if ocsp_case == "revoked":
        return False
    return crl_case == "good"


@pytest.mark.parametrize("crl_case", CRL_CASES)
@pytest.mark.parametrize("ocsp_case", OCSP_CASES)
def test_the_revocation_matrix(ocsp_case, crl_case):
    cert = enb(aia=ocsp_case != "no-url")
    store, crls = CrlStore(), ()
    if crl_case in ("good", "revoked"):
        serials = [7, cert.serial_number] if crl_case == "revoked" else [7, 8]
        store.put(crl_entry("root-crl", serials))
        crls = ("root-crl",)
    elif crl_case == "error":
        store.put(crl_entry("root-crl", [], error="tftp://192.0.2.9/root.crl: timed out"))
        crls = ("root-crl",)
    pair = parked(cert, store, ocsp=True, crls=crls)
    if ocsp_case != "no-url":
        (ask,) = pair.of("r", CheckOcsp)
        assert ask.url == OCSP_URL and not pair.of("r", Established)
        body = None if ocsp_case == "error" else ocsp_answer(cert, ocsp_case)
        answer(pair, "ocsp", OCSP_URL, body, "connection refused" if body is None else None)
    else:
        assert not pair.of("r", CheckOcsp)
    (verdict,) = pair.of("r", RevocationChecked)
    ok = expected(ocsp_case, crl_case)
    assert verdict.ok is ok, verdict.reason
    assert bool(pair.of("r", Established)) is ok and bool(pair.of("i", Established)) is ok
    if not ok:
        (failed,) = pair.of("r", AuthFailed)
        assert "revoked or unverifiable" in failed.reason
    if ocsp_case == "revoked":  # both answers are logged, the CRL one included
        assert "OCSP" in verdict.reason and ("CRL" in verdict.reason or "ca-crl" in verdict.reason
                                             or "no CRL" in verdict.reason)  # fmt: skip
    no_internal_errors(pair)


def test_no_revocation_settings_no_check():
    pair = Pair(enb_config(enb()), gw_config()).established()
    assert not pair.of("r", CheckOcsp) and not pair.of("r", RevocationChecked)


def test_copies_of_the_parked_request_are_dropped():
    pair = parked(enb(), CrlStore(), ocsp=True)
    request = pair.wire[2]
    pair.run([request])  # the eNodeB retransmits while the responder is asked
    assert any("still being processed" in d.reason for d in pair.of("r", Dropped))
    assert len(pair.of("r", CheckOcsp)) == 1
    answer(pair, "ocsp", OCSP_URL, ocsp_answer(enb(), "good"))
    assert len(pair.of("r", Established)) == 1


def test_a_silent_responder_falls_back_to_the_crl_when_the_timer_runs_out():
    store = CrlStore()
    store.put(crl_entry("root-crl", [1, 2]))
    pair = parked(enb(), store, ocsp=True, crls=("root-crl",), timeout_s=1.5)
    assert pair.of("r", CheckOcsp)
    pair.timers("r")  # the revocation timer: 1.5 s after the request
    assert pair.now == pytest.approx(1.5)
    (verdict,) = pair.of("r", RevocationChecked)
    assert verdict.ok and "no answer within 1.5 s" in verdict.reason
    pair.run([])
    assert pair.of("r", Established)


def test_a_silent_responder_and_no_crl_fail_closed_within_the_timer():
    pair = parked(enb(), CrlStore(), ocsp=True, timeout_s=2)
    pair.timers("r")
    (failed,) = pair.of("r", AuthFailed)
    assert "fail closed" in failed.reason and pair.now == pytest.approx(2)


def test_the_nonce_is_sent_and_must_come_back():
    for echoed, ok in ((True, True), (False, False)):
        pair = parked(enb(), CrlStore(), ocsp=True, nonce=True)
        (ask,) = pair.of("r", CheckOcsp)
        sent = ocsp.load_der_ocsp_request(ask.request).extensions
        nonce = sent.get_extension_for_class(x509.OCSPNonce).value.nonce
        answer(pair, "ocsp", OCSP_URL, ocsp_answer(enb(), "good", nonce if echoed else None))
        assert bool(pair.of("r", Established)) is ok


def test_a_wrong_nonce_is_an_error_then_the_crl_decides():
    store = CrlStore()
    store.put(crl_entry("root-crl", [enb().serial_number]))
    pair = parked(enb(), store, ocsp=True, nonce=True, crls=("root-crl",))
    answer(pair, "ocsp", OCSP_URL, ocsp_answer(enb(), "good", b"not the nonce we sent"))
    (verdict,) = pair.of("r", RevocationChecked)
    assert not verdict.ok and "nonce" in verdict.reason and "revoked" in verdict.reason


def test_a_stale_crl_cannot_say_good():
    store = CrlStore()
    store.put(crl_entry("root-crl", [1], next_update=WALL - HOUR))
    pair = parked(enb(aia=False), store, crls=("root-crl",))
    (failed,) = pair.of("r", AuthFailed)
    assert "stale" in failed.reason


def test_a_cdp_crl_is_fetched_when_first_needed():
    cert = enb(aia=False, cdp=True)
    store = CrlStore()
    pair = parked(cert, store, ocsp=True)  # OCSP on, but no URL: the CDP decides
    (fetch,) = pair.of("r", FetchCrl)
    assert fetch.url == CDP_URL and fetch.issuer == pki()["root"].public_bytes(
        serialization.Encoding.DER
    )
    store.put(crl_entry(None, [cert.serial_number], url=CDP_URL))  # as the runner installs it
    answer(pair, "crl", CDP_URL)
    (failed,) = pair.of("r", AuthFailed)
    assert "serial" in failed.reason and "revoked" in failed.reason


def test_a_failed_cdp_fetch_fails_closed():
    pair = parked(enb(aia=False, cdp=True), CrlStore(), ocsp=True)
    answer(pair, "crl", CDP_URL, error="HTTP 404")
    (failed,) = pair.of("r", AuthFailed)
    assert "HTTP 404" in failed.reason and "fail closed" in failed.reason


def test_a_crl_signed_by_another_ca_does_not_cover_the_certificate():
    store, other = CrlStore(), crl_entry("rogue-crl", [])
    store.put(CrlEntry(**{**other.__dict__, "issuer_key_sha1": b"\x00" * 20}))
    pair = parked(enb(aia=False), store, crls=("rogue-crl",))
    (failed,) = pair.of("r", AuthFailed)
    assert "no CRL for the certificate's issuer" in failed.reason


def test_the_gateway_does_not_send_its_own_revoked_certificate():
    gw_cert = pki()["gw"]
    store = CrlStore()
    inter = pki()["inter"]
    entry = crl_entry(None, [gw_cert.serial_number], url="http://crl.lab.example/inter.crl")
    store.put(CrlEntry(**{**entry.__dict__, "issuer": inter.subject.public_bytes(),
                          "name": "inter-crl"}))  # fmt: skip
    pair = Pair(config("enb"), gw_config(crl_store=store))
    pair.run(pair.start())
    (failed,) = pair.of("r", AuthFailed)
    assert "our certificate" in failed.reason and not pair.of("i", Established)


def test_the_configuration_stream_replaces_a_crl_whatever_its_version():
    """A CDP answer never replaces a newer CRL; the configuration stream always does (a new
    active MIO numbers its CRLs from 1 again)."""
    store = CrlStore()
    newer = CrlEntry(**{**crl_entry("root-crl", [1]).__dict__, "version": 7})
    store.put(newer)
    restarted = crl_entry("root-crl", [1, 2])  # version 1, from the new active MIO
    store.put(restarted)
    assert store.by_name["root-crl"] is newer
    store.put(restarted, force=True)
    assert store.by_name["root-crl"] is restarted and 2 in restarted.index
