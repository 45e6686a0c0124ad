"""Session recovery on the management card: which card checkpoints to which, relaying the
checkpoints, and the takeover when an active packet card fails or is migrated.

- The standby: the first packet card whose role is standby and which is in service. Every
  active card learns it from its configuration stream (key "standby") and streams its SAs'
  checkpoints (cards/recovery.py) in numbered batches; the supervisor relays each batch to
  the standby on the control socket (CURVE: checkpoints are key material) and relays the
  standby's ack back.
- A failure (crash, hang) of an active card whose checkpoints the standby holds: the standby
  is told to take over (it adopts the SAs, rebuilds their ESP state, syncs Message IDs with
  RFC 6311), the roles swap (StarOS: no automatic revert; the failed card, once rebooted, is
  the standby), and the NPU steers the failed card's SPI slot bits to the new active card.
- `card migrate from X to Y` does the same on purpose: X sends a last full batch, Y takes
  over, X lets its SAs go without deleting them (Y serves them now).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from chassis.ipc.messages import CardStates, Request
from chassis.ipc.rpc import RpcError

if TYPE_CHECKING:
    from chassis.ipc.sockets import Incoming
    from supervisor.runner import Supervisor

log = logging.getLogger("recovery")
RELAY_TIMEOUT_S = 10.0  # a full batch of 10,000 SAs is tens of megabytes


class SessionRecovery:
    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.owners: dict[int, int] = {}  # SPI slot bits -> the card serving them
        self.published: object = ()  # the "standby" value the cards were last given
        self.held: dict[int, int] = {}  # active slot -> the last batch the standby acked
        self.holder: int | None = None  # the standby those acks came from
        self.takeovers: list[dict] = []  # what each takeover did (show, drills)

    # --- who is the standby --------------------------------------------------------------
    def standby(self) -> int | None:
        cards = self.sup.cards.cards
        for slot in sorted(self.sup.packet_slots):
            card = cards[slot]
            if card.role == "standby" and card.state == "standby":
                return slot
        return None

    def publish(self) -> None:
        """Tell the cards where the standby is (each tick; sent only when it changes)."""
        slot = self.standby()
        value = {"slot": slot} if slot is not None else None
        if value == self.published:
            return
        self.published = value
        if slot != self.holder:
            self.held, self.holder = {}, slot  # a new standby holds nothing yet
        for s in self.sup.packet_slots:
            self.sup.fanout.set_config(s, "standby", value)
        log.info("standby packet card: %s", slot if slot is not None else "none")

    # --- checkpoints -----------------------------------------------------------------------
    async def relay(self, inc: Incoming, slot: int, args: dict) -> None:
        """An active card's batches to the standby; its answer back ({ack, full})."""
        sup, standby = self.sup, self.standby()
        if sup.cards.cards[slot].state not in ("active", "migrating"):  # a resumed failed card
            sup.ctl.reply(inc, False, error=f"card {slot} is not active")
            return
        if standby is None or standby == slot:
            sup.ctl.reply(inc, False, error="no standby packet card in service")
            return
        try:
            answer = await sup.pending.call(
                sup.ctl, Request("ckpt.hold", {"from": slot, "batches": args.get("batches", [])}),
                to=f"slot-{standby}".encode(), timeout=RELAY_TIMEOUT_S,
            )  # fmt: skip
        except (TimeoutError, RpcError) as exc:
            sup.ctl.reply(inc, False, error=f"standby {standby}: {exc or 'no answer'}")
            return
        if standby == self.holder and not answer.get("full"):
            self.held[slot] = int(answer.get("ack", 0))
        sup.ctl.reply(inc, True, answer)

    # --- planned moves: `card migrate`, `card halt` ---------------------------------------
    async def migrate(self, src: int, dst: int, halt: bool = False) -> str:
        """Move every SA of active card ``src`` to the standby ``dst`` without losing one;
        ``src`` becomes the standby (``halt``: goes offline)."""
        from supervisor.cli import CommandFailure

        sup, cards = self.sup, self.sup.cards.cards
        for slot in (src, dst):
            if slot not in sup.packet_slots:
                raise CommandFailure(f"Failure: slot {slot} holds no packet card")
        if cards[src].state != "active":
            raise CommandFailure(f"Failure: card {src} is not active ({cards[src].state})")
        if dst != self.standby():
            raise CommandFailure(f"Failure: card {dst} is not the standby card in service")
        sup.cards.set_state(src, "migrating", sup.mono.now())
        try:
            full = await sup.pending.call(sup.ctl, Request("ckpt.full", {}),
                                          to=f"slot-{src}".encode(), timeout=5)  # fmt: skip
            answer = await sup.pending.call(
                sup.ctl, Request("ckpt.hold", {"from": src, "batches": [full]}),
                to=f"slot-{dst}".encode(), timeout=5,
            )  # fmt: skip
            if answer.get("full"):
                raise RpcError(f"card {dst} did not take the checkpoints")
            self.held[src] = int(answer.get("ack", 0))
        except (TimeoutError, RpcError) as exc:
            sup.cards.set_state(src, "active", sup.mono.now())
            raise CommandFailure(f"Failure: migration from {src} to {dst}: {exc}") from None
        record = await self.take_over(src, dst, "halt" if halt else "migrate")
        if "error" in record:
            sup.cards.set_state(src, "active", sup.mono.now())
            raise CommandFailure(f"Failure: card {dst} could not take over: {record['error']}")
        try:  # the old card lets its SAs go without deleting them: they live on at dst
            await sup.pending.call(sup.ctl, Request("release", {}), to=f"slot-{src}".encode(),
                                   timeout=5)  # fmt: skip
        except (TimeoutError, RpcError) as exc:
            log.warning("slot %d: release after migration: %s", src, exc)
        if halt:
            sup.halt(src)
            return (f"Info: card {src} migrated its {record['sas']} IKE SAs to card {dst} "
                    "and is offline")  # fmt: skip
        sup.cards.set_state(src, "standby", sup.mono.now())
        return f"Info: card {src} migrated its {record['sas']} IKE SAs to card {dst}; card {src} is standby"

    # --- takeover --------------------------------------------------------------------------
    def on_failed(self, slot: int) -> None:
        standby = self.holder if self.holder == self.standby() else None
        if standby is None or slot not in self.held or slot == standby:
            return  # no standby, or it holds nothing of this card: its tunnels are lost
        self.sup._spawn(self.take_over(slot, standby, "failure"))

    async def take_over(self, failed: int, standby: int, why: str) -> dict:
        sup = self.sup
        started = sup.mono.now()
        try:
            result = await sup.pending.call(
                sup.ctl, Request("takeover", {"slot": failed}), to=f"slot-{standby}".encode(),
                timeout=5,
            )  # fmt: skip
        except (TimeoutError, RpcError) as exc:
            log.error("slot %d: takeover by %d failed: %s", failed, standby, exc)
            return {"error": str(exc)}
        sup.cards.promote(standby, failed, sup.mono.now())
        sup.bp.send(CardStates(sup.cards.states()))  # the backplane steers to it at once
        for bits, owner in list(self.owners.items()):  # what the failed card served before
            if owner == failed:
                self.owners[bits] = standby
        self.owners[failed] = standby
        self.held.pop(failed, None)
        self.published = ()  # the roles changed: publish the standby again
        sup.update_npu()
        try:  # the backplane answers in order: once it does, the NPU steers to the new card
            await sup.pending.call(sup.bp, Request("npu.owners", {}), timeout=5)
        except (TimeoutError, RpcError) as exc:
            log.error("slot %d: the NPU did not confirm card %d's SPIs: %s", failed, standby, exc)
        # Done: every SA active on the standby and the NPU steering to it (issue #10's
        # takeover). The RFC 6311 syncs follow, a slice per loop turn at the card.
        done = sup.mono.now()
        record = {"failed": failed, "by": standby, "why": why, "sas": result.get("sas", 0),
                  "children": result.get("children", 0), "took_ms": round((done - started) * 1e3, 1),
                  "card_ms": result.get("took_ms"), "at": done}  # fmt: skip
        self.takeovers.append(record)
        log.warning("slot %d: %s: card %d took over %d IKE SAs (%d children) in %.1f ms",
                    failed, why, standby, record["sas"], record["children"], record["took_ms"])  # fmt: skip
        try:
            synced = await sup.pending.call(sup.ctl, Request("takeover.sync", {}),
                                            to=f"slot-{standby}".encode(), timeout=5)  # fmt: skip
            record["sync_ms"] = round((sup.mono.now() - started) * 1e3, 1)
            log.info("slot %d: card %d sent %d Message ID syncs, %.1f ms after the order",
                     failed, standby, synced.get("syncs", 0), record["sync_ms"])  # fmt: skip
        except (TimeoutError, RpcError) as exc:
            log.error("slot %d: Message ID sync at card %d: %s", failed, standby, exc)
        return record
