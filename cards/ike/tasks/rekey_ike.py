"""IKE SA rekey with CREATE_CHILD_SA, either side (RFC 7296 1.3.2, 2.18, 2.8.1).

    HDR, SK{SA (SPI = new SPIi), Ni, KEi}  -->  <--  HDR, SK{SA (SPI = new SPIr), Nr, KEr}

The new IKE SA's initiator is the rekey's initiator. SKEYSEED = prf(SK_d (old), g^ir (new) |
Ni | Nr) with the old SA's PRF (as strongSwan does), then the seven keys with the new
suite's prf+ over the new SPIs. The CHILD_SAs move to the new SA; message IDs start at 0.
The rekey's initiator then deletes the old IKE SA. When both sides rekeyed at once, the new
SA holding the lowest of the four nonces is redundant: its initiator deletes it, and the
children end on the other one.
"""

from __future__ import annotations

from dataclasses import replace

from ..dh import DiffieHellman, InvalidKeyExchange
from ..errors import InvalidKePayload, InvalidSyntax, NoProposalChosen
from ..message import KePayload, NoncePayload, SaPayload
from ..proposals import accepted, ike_sa_payload, select
from . import Ctx, Task, retry_with_asked_group

NONCE_LEN = 32
SPI_LEN = 8


class IkeRekeyTask(Task):
    def __init__(self):
        self.spi = b""  # our SPI of the new SA
        self.nonce = b""
        self.dh: DiffieHellman | None = None
        self.group = 0
        self.ke_retried = False
        self.reply = None  # responder: (our proposal choice, the peer's SPI, Ni, g^ir)

    # ------------------------------------------------------------------ initiator
    def build_i(self, sa, ctx: Ctx) -> None:
        if not self.spi:
            self.spi, self.nonce = sa.new_ike_spi(), sa.rand(NONCE_LEN)
            sa.ike_rekeying = self
        # the current transform set first: a rekey normally keeps it
        current = sa.proposal
        self.offered = (current, *(p for p in sa.config.proposals if p != current))
        self.group = self.group or current.dh
        if self.dh is None or self.dh.group != self.group:
            self.dh = DiffieHellman(self.group, sa.rand)
        ctx.payloads += [ike_sa_payload(self.offered, self.spi), NoncePayload(self.nonce),
                         KePayload(self.group, self.dh.public)]  # fmt: skip

    def process_i(self, sa, ctx: Ctx) -> None:
        retry_with_asked_group(self, ctx)
        reply, nonce, ke = ctx.first(SaPayload), ctx.first(NoncePayload), ctx.first(KePayload)
        sa.ike_rekeying = None
        if ctx.errors() or reply is None or nonce is None or ke is None:
            sa.ike_rekey_failed()
            return
        try:
            chosen = accepted(reply, self.offered)
            their_spi = reply.proposals[0].spi
            if len(their_spi) != SPI_LEN or chosen.dh != self.group or ke.group != self.group:
                raise NoProposalChosen("responder's IKE rekey answer does not match our offer")
            shared = self.dh.shared(ke.data)
        except (NoProposalChosen, InvalidKeyExchange):
            sa.ike_rekey_failed()
            return
        new = sa.successor_sa(chosen, True, self.spi, their_spi, self.nonce, nonce.data, shared)
        sa.ike_rekey_done(new, (self.nonce, nonce.data))

    # ------------------------------------------------------------------ responder
    def process_r(self, sa, ctx: Ctx) -> None:
        offer, nonce, ke = ctx.first(SaPayload), ctx.first(NoncePayload), ctx.first(KePayload)
        if offer is None or nonce is None or ke is None:
            raise InvalidSyntax("IKE rekey without SA, Nonce or KE")
        if any(len(p.spi) != SPI_LEN for p in offer.proposals):
            raise InvalidSyntax("IKE rekey proposal without an 8-octet SPI")
        proposal, chosen = select(offer, sa.config.proposals, ke.group, spi=True)
        if ke.group != chosen.dh:
            raise InvalidKePayload(chosen.dh)
        self.dh = DiffieHellman(chosen.dh, sa.rand)
        try:
            shared = self.dh.shared(ke.data)
        except InvalidKeyExchange as exc:
            raise InvalidSyntax(str(exc)) from None
        their_spi = next(p.spi for p in offer.proposals if p.num == proposal.num)
        self.spi, self.nonce = sa.new_ike_spi(), sa.rand(NONCE_LEN)
        self.reply = (proposal, chosen, their_spi, nonce.data, shared)

    def build_r(self, sa, ctx: Ctx) -> None:
        proposal, chosen, their_spi, ni, shared = self.reply
        ctx.payloads += [SaPayload([replace(proposal, spi=self.spi)]), NoncePayload(self.nonce),
                         KePayload(self.dh.group, self.dh.public)]  # fmt: skip
        new = sa.successor_sa(chosen, False, their_spi, self.spi, ni, self.nonce, shared)
        sa.ike_rekeyed_by_peer(new, (ni, self.nonce))
