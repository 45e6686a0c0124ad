"""CERTREQ (RFC 7296 3.7): the responder sends it in IKE_SA_INIT, the initiator in IKE_AUTH.

Received CERTREQs tell ``chain_to_send`` which CA the peer holds, so the intermediates below
it are sent and nothing above it. HTTP_CERT_LOOKUP_SUPPORTED goes with them (Hash and URL).
"""

from __future__ import annotations

from cards.pki import ChainError, certreq_data, parse_certreq

from ..const import CertEncoding, ExchangeType, NotifyType
from ..message import CertReqPayload
from . import Ctx, Task, derived


class CertPreTask(Task):
    def build_i(self, sa, ctx: Ctx) -> None:
        if ctx.exchange == ExchangeType.IKE_AUTH:
            _add(sa, ctx)

    def process_i(self, sa, ctx: Ctx) -> None:
        if ctx.exchange == ExchangeType.IKE_SA_INIT:
            sa.peer_certreq = _read(sa, ctx)

    def process_r(self, sa, ctx: Ctx) -> None:
        if ctx.exchange == ExchangeType.IKE_AUTH:
            sa.peer_certreq = _read(sa, ctx)

    def build_r(self, sa, ctx: Ctx) -> None:
        if ctx.exchange == ExchangeType.IKE_SA_INIT:
            _add(sa, ctx)


def _add(sa, ctx: Ctx) -> None:
    cfg = sa.config
    if cfg.trust_anchors:
        data = derived(cfg, "certreq", lambda: certreq_data(cfg.trust_anchors))
        ctx.payloads.append(CertReqPayload(CertEncoding.X509_SIGNATURE, data))
    if cfg.hash_and_url:  # RFC 7296 3.10.1: with a CERTREQ, we can fetch certificates by URL
        ctx.add_notify(NotifyType.HTTP_CERT_LOOKUP_SUPPORTED)


def _read(sa, ctx: Ctx) -> list[bytes]:
    sa.peer_http_lookup = ctx.notify(NotifyType.HTTP_CERT_LOOKUP_SUPPORTED) is not None
    hashes: list[bytes] = []
    for req in ctx.all(CertReqPayload):
        if req.encoding != CertEncoding.X509_SIGNATURE:
            continue
        try:
            hashes += parse_certreq(req.data)
        except ChainError:
            continue  # a malformed CERTREQ only costs the peer a longer chain
    return hashes
