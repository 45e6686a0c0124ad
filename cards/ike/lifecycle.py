"""IKE SA life cycle: MCSA, child and IKE SA rekeys with their collisions, lifetimes, DPD.

A mixin of IkeSa (cards/ike/sa.py), which owns the state and the task manager; the
exchanges themselves are tasks (tasks/create_child.py, tasks/rekey_ike.py).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from .child import ChildSa
from .config import ChildPolicy, IkeProposal
from .crypto import derive_ike_keys, skeyseed_rekey
from .events import IkeRekeyed
from .proposals import shared_suite
from .states import State as S
from .states import X
from .tasks.create_child import CreateChildTask
from .tasks.informational import ChildDeleteTask, DeleteTask, LivenessTask
from .tasks.rekey_ike import IkeRekeyTask

if TYPE_CHECKING:
    from .sa import IkeSa


class Lifecycle:
    __slots__ = ()

    def _ike_timers(self) -> None:
        self.last_heard = self.now
        life = self.config.ike_lifetime_s
        self.ike_expire_at = self.now + life
        self.ike_rekey_at = self.now + 0.9 * life if self.config.ike_rekey else None

    def policy(self, name: str):
        """The child-SA payload called ``name`` (the first one if it is no longer configured)."""
        return next((p for p in self.config.children if p.name == name), None) or (
            self.config.children[0] if self.config.children else ChildPolicy()
        )

    def covered(self, name: str) -> bool:
        return any(c.policy == name for c in self.children.values())

    def child_count(self) -> int:
        """Child SAs against max-childsa: a child being replaced by a rekey counts once."""
        return len(self.children) - sum(1 for old in self.replacing if old in self.children)

    def overloaded(self) -> None:
        """A request beyond max-childsa: `overload-action terminate` deletes the IKE SA."""
        if self.config.overload_action == "terminate":
            self.pending.append((X.INFORMATIONAL, [DeleteTask()]))

    def rekey_done(self, old: bytes, new: ChildSa) -> None:
        """Our rekey of ``old`` is answered: delete the old child (and settle a collision)."""
        entry = self.replacing.setdefault(old, {})
        entry["mine"] = new
        if not entry.get("deleting"):
            entry["deleting"] = True
            self.pending.append((X.INFORMATIONAL, [ChildDeleteTask(old)]))
        self._settle(old)

    def rekey_failed(self, old: bytes) -> None:
        if old in self.children and old not in self.replacing:
            self.children[old].rekey_at = None  # the child runs out its lifetime instead

    def rekeyed_by_peer(self, old: bytes, new: ChildSa) -> None:
        self.replacing.setdefault(old, {})["theirs"] = new
        self._settle(old)

    def _settle(self, old: bytes) -> None:
        """Both sides rekeyed ``old``: the new child holding the lowest of the four nonces is
        redundant and deleted by the side that created it (RFC 7296 2.8.1)."""
        entry = self.replacing.get(old, {})
        mine, theirs = entry.get("mine"), entry.get("theirs")
        if mine is None or theirs is None or entry.get("settled"):
            return
        entry["settled"] = True
        if min(mine.nonces + theirs.nonces) in mine.nonces:
            self.pending.append((X.INFORMATIONAL, [ChildDeleteTask(mine.our_spi)]))

    def successor_sa(self, chosen: IkeProposal, initiator: bool, spi_i: bytes, spi_r: bytes,
                     ni: bytes, nr: bytes, shared: bytes) -> IkeSa:  # fmt: skip
        """The IKE SA a rekey makes: keys from SK_d (old) and the new g^ir (2.18)."""
        new = type(self)(self.config, self.rand, initiator=initiator, spi_i=spi_i, spi_r=spi_r,
                    local=self.local, peer=self.peer, wall_clock=self.wall_clock)  # fmt: skip
        new.proposal, new.suite, new.ni, new.nr = chosen, shared_suite(chosen), ni, nr
        seed = skeyseed_rekey(self.suite.prf, self.keys.sk_d, shared, ni, nr)
        # no AUTH on a rekeyed SA: without SK_pi/SK_pr, as after IKE_AUTH (_setup_done)
        new.keys = replace(derive_ike_keys(new.suite, seed, ni, nr, spi_i, spi_r), sk_pi=b"",
                           sk_pr=b"")  # fmt: skip
        new.state, new.now = S.ESTABLISHED, self.now
        new.peer_id, new.peer_cert_subject = self.peer_id, self.peer_cert_subject
        new.nat_local, new.nat_remote, new.peer_hashes = (
            self.nat_local,
            self.nat_remote,
            self.peer_hashes,
        )
        new.new_esp_spi, new.new_ike_spi = self.new_esp_spi, self.new_ike_spi
        new._out = self._out  # what it sends in this step leaves with ours
        new._ike_timers()
        self.successors = [*self.successors, new]
        self.emit(IkeRekeyed(self.spi_i, self.spi_r, spi_i, spi_r, initiator))
        return new

    def _hand_children(self, src: IkeSa, dst: IkeSa) -> None:
        """A rekey's new IKE SA takes the CHILD_SAs, the peer's inner addresses and the child
        exchanges still queued for them (a child rekey due in the same tick as the IKE SA's)."""
        moved = set(src.children)
        dst.children.update(src.children)
        dst.replacing.update(src.replacing)
        dst.assigned, dst.virtual_ips = src.assigned, src.virtual_ips
        src.children, src.replacing, src.assigned, src.virtual_ips = {}, {}, [], []
        stay = []
        for exchange, tasks in src.pending:
            spis = {getattr(t, "rekey", None) for t in tasks} | {
                getattr(t, "our_spi", None) for t in tasks
            }
            (dst.pending if spis & moved else stay).append((exchange, tasks))
        src.pending = stay

    def ike_rekey_done(self, new: IkeSa, nonces: tuple) -> None:
        """Our rekey is answered. Unless the peer's simultaneous rekey wins (2.8.1), the
        children move to our new SA and we delete this one."""
        self.rekeyed_ours = (new, nonces)
        theirs = self.rekeyed_to_theirs
        if theirs is not None and min(nonces + theirs[1]) in nonces:
            self._redundant(new)
            return  # the peer deletes this SA; the children are on its new one already
        self._hand_children(theirs[0] if theirs else self, new)
        self.pending.append((X.INFORMATIONAL, [DeleteTask()]))

    def ike_rekeyed_by_peer(self, new: IkeSa, nonces: tuple) -> None:
        """We answered the peer's rekey: the children move to the new SA and the peer deletes
        this one, unless our own rekey crossed it and wins (its SA has the lowest nonce)."""
        ours = self.rekeyed_ours
        if ours is not None:  # ours was answered first: settle now
            if min(ours[1] + nonces) in ours[1]:
                self._hand_children(ours[0], new)
                self._redundant(ours[0])
            return
        self._hand_children(self, new)
        if self.ike_rekeying is not None:
            self.rekeyed_to_theirs = (new, nonces)

    def _redundant(self, new: IkeSa) -> None:
        """Our new SA lost a rekey collision: we created it, so we delete it."""
        new.pending.append((X.INFORMATIONAL, [DeleteTask()]))
        new._out = self._out
        new._kick(self.now)

    def ike_rekey_failed(self) -> None:
        if self.ike_expire_at is not None:  # try again later, within the lifetime
            self.ike_rekey_at = min(self.now + 30, self.ike_expire_at)

    def _lifetimes(self, now: float) -> None:
        """Responder-triggered MCSA, rekeys at 90% of the lifetime, expiry."""
        if self.ike_expire_at is not None and now >= self.ike_expire_at:
            self.ike_expire_at = self.ike_rekey_at = None
            self.pending.append((X.INFORMATIONAL, [DeleteTask()]))
        elif self.ike_rekey_at is not None and now >= self.ike_rekey_at:
            self.ike_rekey_at = None
            if self.ike_rekeying is None:
                self.pending.append((X.CREATE_CHILD_SA, [IkeRekeyTask()]))
        dpd = self._dpd_at()
        if dpd is not None and now >= dpd:
            cfg = self.config
            self.pending.append((X.INFORMATIONAL,
                                 [LivenessTask(retry=(cfg.dpd_retry_s, cfg.dpd_max_retries))]))  # fmt: skip
        if self.mcsa_at is not None and now >= self.mcsa_at:
            self.mcsa_at = None
            for policy in self.config.children:
                if not self.covered(policy.name):
                    self.pending.append((X.CREATE_CHILD_SA, [CreateChildTask(policy)]))
        for spi, child in list(self.children.items()):
            if child.expire_at is not None and now >= child.expire_at:
                child.expire_at = child.rekey_at = None
                self.pending.append((X.INFORMATIONAL, [ChildDeleteTask(spi)]))
            elif child.rekey_at is not None and now >= child.rekey_at:
                child.rekey_at = None
                if spi not in self.replacing:
                    self.pending.append((X.CREATE_CHILD_SA, [CreateChildTask(rekey=spi)]))
        self._kick(now)

    def _dpd_at(self) -> float | None:
        """When to check liveness: after dpd_interval_s without a word from the peer, if
        nothing of ours is in flight (a request in flight checks liveness already)."""
        interval = self.config.dpd_interval_s
        if interval is None or self.outstanding is not None or self.pending:
            return None
        return self.last_heard + interval
