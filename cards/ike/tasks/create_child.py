"""CREATE_CHILD_SA for CHILD_SAs: a new child or a child rekey, either side (RFC 7296 1.3).

    new child:   HDR, SK{SA, Ni, [KEi], TSi, TSr}            -->  HDR, SK{SA, Nr, [KEr], TSi, TSr}
    child rekey: HDR, SK{N(REKEY_SA), SA, Ni, [KEi], TSi, TSr}

A new child's payload (``ChildPolicy``) is chosen like the first one's (containment, then
narrowing); one that matches none gets TS_UNACCEPTABLE, one beyond ``max_children`` (rekeys
not counted) NO_ADDITIONAL_SAS. With PFS (the payload's transform set names a DH group) the
exchange carries KE and KEYMAT = prf+(SK_d, g^ir (new) | Ni | Nr) (2.17); a KE of another
group is answered with INVALID_KE_PAYLOAD and the initiator retries once with the group asked.

Rekey: REKEY_SA names the SPI the exchange's initiator receives on (3.10.1); the new child
keeps the old one's payload. The rekey's initiator deletes the old child once the new one is
up. Collisions (2.8.1): when both sides rekeyed the same child, each side, once it has both
new children, deletes the one it initiated if that one holds the lowest of the four nonces.
"""

from __future__ import annotations

from ..child import (
    ChildSa,
    TsUnacceptable,
    accepted_esp,
    choose_policy,
    derive_child_keys,
    esp_offer,
    esp_sa_payload,
    pin,
    within,
)
from ..config import ChildPolicy
from ..const import ExchangeType, NotifyType, PayloadType, ProtocolId
from ..dh import DiffieHellman, InvalidKeyExchange
from ..errors import InvalidKePayload, InvalidSyntax, NoProposalChosen
from ..events import ChildRefused
from ..message import KePayload, NoncePayload, NotifyPayload, SaPayload, TsPayload
from . import Ctx, Task, retry_with_asked_group
from .informational import ChildDeleteTask

NONCE_LEN = 32


class Skip(Exception):
    """build_i: nothing to ask for any more (the payload got covered meanwhile)."""


class CreateChildTask(Task):
    def __init__(self, policy: ChildPolicy | None = None, rekey: bytes | None = None):
        self.policy = policy  # initiator of a new child: the payload to create
        self.rekey = rekey  # initiator of a rekey: our inbound SPI of the child to replace
        self.our_spi = b""
        self.nonce = b""
        self.dh: DiffieHellman | None = None
        self.group = 0
        self.ke_retried = False
        self.choice = None  # responder
        self.refusal: tuple[int, str] | None = None
        self.old: ChildSa | None = None  # responder of a rekey: the child replaced

    # ------------------------------------------------------------------ initiator
    def _offer(self, sa) -> tuple[ChildPolicy, tuple]:
        if self.rekey is not None:
            old = sa.children.get(self.rekey)
            if old is None:
                raise Skip
            policy = sa.policy(old.policy)
            # the old transform set first: a rekey normally keeps it (StarOS `rekey
            # disallow-param-change`)
            return policy, (old.suite, *(p for p in policy.proposals if p != old.suite))
        if sa.covered(self.policy.name) or sa.child_count() >= sa.config.max_children:
            raise Skip
        return self.policy, self.policy.proposals

    def build_i(self, sa, ctx: Ctx) -> None:
        policy, proposals = self._offer(sa)
        if not self.our_spi:
            self.our_spi = sa.new_esp_spi()
            self.nonce = sa.rand(NONCE_LEN)
        self.group = self.group or proposals[0].dh
        if self.rekey is not None:
            ctx.payloads.append(NotifyPayload(NotifyType.REKEY_SA, b"", ProtocolId.ESP,
                                              self.rekey))  # fmt: skip
        ctx.payloads += [esp_offer(proposals, self.our_spi, pfs=True), NoncePayload(self.nonce)]
        if self.group:
            if self.dh is None or self.dh.group != self.group:
                self.dh = DiffieHellman(self.group, sa.rand)
            ctx.payloads.append(KePayload(self.group, self.dh.public))
        self.chosen, self.offered = policy, proposals
        self.ts = self._selectors(sa, policy)
        ctx.payloads += [TsPayload(list(self.ts[0]), PayloadType.TSi),
                         TsPayload(list(self.ts[1]), PayloadType.TSr)]  # fmt: skip

    def _selectors(self, sa, policy: ChildPolicy):
        if self.rekey is not None:  # the same traffic as the child replaced, from our side
            old = sa.children[self.rekey]
            return (old.tsi, old.tsr) if old.initiator else (old.tsr, old.tsi)
        remote = pin(policy.ts_remote, sa.assigned)  # the peer's inner address, if it has one
        if not remote:
            raise Skip  # the payload does not cover the address the peer was given
        return policy.ts_local, remote

    def process_i(self, sa, ctx: Ctx) -> None:
        retry_with_asked_group(self, ctx)
        errors = ctx.errors()
        reply = ctx.first(SaPayload)
        if errors or reply is None:
            self._refused(sa, _name(errors[0].type) if errors else "no SA payload in the response")
            return
        nonce, ke = ctx.first(NoncePayload), ctx.first(KePayload)
        tsi, tsr = ctx.first(TsPayload, PayloadType.TSi), ctx.first(TsPayload, PayloadType.TSr)
        try:
            their_spi, suite = accepted_esp(reply, self.offered, pfs=True)
            if nonce is None or tsi is None or tsr is None:
                raise InvalidSyntax("CREATE_CHILD_SA response without Nonce, TSi or TSr")
            if not (within(tsi.selectors, self.ts[0]) and within(tsr.selectors, self.ts[1])):
                raise TsUnacceptable("responder's selectors are not within what we asked")
            shared = self._shared(suite, ke)
        except (NoProposalChosen, TsUnacceptable, InvalidSyntax) as exc:
            self._refused(sa, exc.args[0] if exc.args else type(exc).__name__)
            sa.pending.append((ExchangeType.INFORMATIONAL, [ChildDeleteTask(self.our_spi)]))
            return
        keys = derive_child_keys(sa.suite.prf, sa.keys.sk_d, self.nonce, nonce.data, suite,
                                 shared)  # fmt: skip
        child = ChildSa(self.our_spi, their_spi, suite, tuple(tsi.selectors),
                        tuple(tsr.selectors), True, keys, self.chosen.name)  # fmt: skip
        child.nonces = (self.nonce, nonce.data)
        sa.child_up(child, rekey_of=self.rekey)
        if self.rekey is not None:
            sa.rekey_done(self.rekey, child)

    def _shared(self, suite, ke: KePayload | None) -> bytes:
        if not suite.dh:
            return b""
        if ke is None or self.dh is None or ke.group != suite.dh:
            raise NoProposalChosen("responder's KE does not match the chosen group")
        try:
            return self.dh.shared(ke.data)
        except InvalidKeyExchange as exc:
            raise InvalidSyntax(str(exc)) from None

    def _refused(self, sa, reason: str) -> None:
        sa.emit(ChildRefused(sa.spi_i, sa.spi_r, reason))
        if self.rekey is not None:
            sa.rekey_failed(self.rekey)

    # ------------------------------------------------------------------ responder
    def process_r(self, sa, ctx: Ctx) -> None:
        offer, nonce = ctx.first(SaPayload), ctx.first(NoncePayload)
        tsi, tsr = ctx.first(TsPayload, PayloadType.TSi), ctx.first(TsPayload, PayloadType.TSr)
        if offer is None or nonce is None or tsi is None or tsr is None:
            raise InvalidSyntax("CREATE_CHILD_SA request without SA, Nonce, TSi or TSr")
        rekey = ctx.notify(NotifyType.REKEY_SA)
        try:
            if rekey is not None:
                self.old = sa.child_by_their_spi(rekey.spi)
                if self.old is None:
                    self.refusal = (NotifyType.CHILD_SA_NOT_FOUND, "rekey of an unknown child")
                    return
                policies = (sa.policy(self.old.policy),)
            else:
                if sa.child_count() >= sa.config.max_children:
                    self.refusal = (NotifyType.NO_ADDITIONAL_SAS,
                                    f"already {sa.child_count()} child SAs (max-childsa)")  # fmt: skip
                    sa.overloaded()
                    return
                policies = sa.config.children
            policy, theirs, ours, tsi_n, tsr_n = choose_policy(
                offer, tsi.selectors, tsr.selectors, policies, pfs=True
            )
            tsi_n = pin(tsi_n, sa.assigned)  # the peer's side: its inner address (CP)
            if not tsi_n:
                raise TsUnacceptable("TSi does not hold the address the peer was given")
        except NoProposalChosen as exc:
            self.refusal = (NotifyType.NO_PROPOSAL_CHOSEN, exc.reason)
            return
        except TsUnacceptable as exc:
            self.refusal = (NotifyType.TS_UNACCEPTABLE, str(exc))
            return
        ke = ctx.first(KePayload)
        if ours.dh and (ke is None or ke.group != ours.dh):
            raise InvalidKePayload(ours.dh)
        shared = b""
        if ours.dh:
            self.dh = DiffieHellman(ours.dh, sa.rand)
            try:
                shared = self.dh.shared(ke.data)
            except InvalidKeyExchange as exc:
                raise InvalidSyntax(str(exc)) from None
        self.nonce = sa.rand(NONCE_LEN)
        self.choice = (policy, theirs, ours, tsi_n, tsr_n, nonce.data, shared)

    def build_r(self, sa, ctx: Ctx) -> None:
        if self.refusal is not None:
            ntype, reason = self.refusal
            ctx.add_notify(ntype)
            sa.emit(ChildRefused(sa.spi_i, sa.spi_r, reason))
            return
        policy, theirs, suite, tsi, tsr, ni, shared = self.choice
        self.our_spi = sa.new_esp_spi()
        ctx.payloads += [esp_sa_payload(suite, self.our_spi, theirs.num, pfs=True),
                         NoncePayload(self.nonce)]  # fmt: skip
        if self.dh is not None:
            ctx.payloads.append(KePayload(self.dh.group, self.dh.public))
        ctx.payloads += [TsPayload(list(tsi), PayloadType.TSi),
                         TsPayload(list(tsr), PayloadType.TSr)]  # fmt: skip
        keys = derive_child_keys(sa.suite.prf, sa.keys.sk_d, ni, self.nonce, suite, shared)
        child = ChildSa(self.our_spi, theirs.spi, suite, tsi, tsr, False, keys, policy.name)
        child.nonces = (ni, self.nonce)
        sa.child_up(child, rekey_of=self.old.our_spi if self.old else None)
        if self.old is not None:
            sa.rekeyed_by_peer(self.old.our_spi, child)


def _name(ntype: int) -> str:
    try:
        return NotifyType(ntype).name
    except ValueError:
        return f"notify {ntype}"
