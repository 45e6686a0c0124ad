"""The management-card pair, as the backplane runs it (a mixin of chassis.backplane.Backplane).

The backplane outlives both MIOs, so it decides who is active and grants the epoch:
- Both supervisors heartbeat the backplane. When the active one's process exits, or its
  heartbeats stop for the liveness budget (a hang), and the standby is alive, the standby
  is promoted: the roles swap, the epoch goes up by one (cards, the NPU and the CMP path
  obey only the highest), and the standby is told to take over (`mgmt.takeover`).
- An old active that comes back (resumed after SIGSTOP) is told to step down: its next
  message carries a lower epoch, and it is restarted as the standby. Two actives are never
  both obeyed: everything below the backplane's epoch is ignored, and so is everything but
  heartbeats and hellos from the management card that is not the active one.
- Without a standby, a crashed active is restarted in place, as before.
"""

from __future__ import annotations

import asyncio
import logging
import time

from chassis.ipc.messages import Heartbeat, Hello, Request
from chassis.ipc.rpc import RpcError

log = logging.getLogger("backplane")
# A management card is declared hung after this long without a heartbeat (the ZeroMQ guide's
# Binary Star: 2 s). Not the packet cards' 300 ms: a supervisor's event loop legitimately
# stalls for hundreds of milliseconds (loading the CMP ASN.1 modules, a boot configuration),
# and a takeover for that would be worse than the stall. A crash is seen at once (pidfd).
MGMT_HANG_S = 2.0


class ManagementPair:
    def _mgmt_init(self) -> None:
        self.mgmt_seen: dict[int, float] = {}  # MIO slot -> its last heartbeat (its clock)
        self.mgmt_synced: set[int] = set()  # standby MIOs that hold the active's state
        self.demoted: set[int] = set()  # old actives whose process still lives (a hang)
        self.mgmt_takeovers: list[dict] = []  # what each takeover did (status, drills)

    def _mgmt_of(self, peer: bytes | None) -> int | None:
        name = (peer or b"").decode(errors="replace")
        if name.startswith("mgmt-") and name[5:].isdigit() and int(name[5:]) in self.slots:
            return int(name[5:])
        return None

    def mgmt_message(self, inc) -> bool:
        """Every message from a management card passes here first; False: ignore it (an old
        active, now told to step down)."""
        slot = self._mgmt_of(inc.peer)
        if slot is None:
            return True
        if slot in self.demoted:
            self.demoted.discard(slot)
            self.slots[slot].expect_exit = True  # its exit is the step-down: start it again
            self.slots[slot].restart_on_exit = True
            self.bus.send(Request("mgmt.step-down", {"epoch": self.epoch}), to=inc.peer)
            log.warning("slot %d: the old active is back (epoch %d < %d): stepping it down",
                        slot, inc.env.epoch, self.epoch)  # fmt: skip
            return False
        if slot != self.active_mgmt:  # the standby only heartbeats and says hello
            if isinstance(inc.env.msg, Heartbeat | Hello):
                return True
            log.warning("slot %d is not the active management card: its %s ignored",
                        slot, inc.env.type)  # fmt: skip
            return False
        return inc.env.epoch >= self.epoch

    def mgmt_switch(self, src: int | None, dst: int | None) -> str:
        """`card switch from SRC to DST`: a planned takeover; the reason it cannot, raised."""
        standby = self._mgmt_standby()
        if src is not None and src != self.active_mgmt:
            raise ValueError(f"card {src} is not the active management card")
        if standby is None:
            raise ValueError("no standby management card in service")
        if dst is not None and dst != standby.card.slot:
            raise ValueError(f"card {dst} is not the standby management card")
        old = self.active_mgmt
        self.mgmt_takeover("card switch", since=None, planned=True)
        return f"Info: management card {standby.card.slot} is taking over from card {old}"

    def mgmt_heartbeat(self, slot: int, sent: float, synced: bool = False) -> None:
        """A MIO's heartbeat; a standby's says whether it holds the active's state yet."""
        self.mgmt_seen[slot] = max(self.mgmt_seen.get(slot, 0.0), sent)
        (self.mgmt_synced.add if synced else self.mgmt_synced.discard)(slot)

    def _mgmt_standby(self):
        """The standby MIO, if it can take over: hello'd, alive, heard within the budget, and
        in sync (one that never got the active's state would replay the startup-config,
        `cmp initialize` included, beside an active that may only have been slow)."""
        budget = max(self.interval * self.liveness, MGMT_HANG_S)
        for slot in self.slots.values():
            if (slot.card.is_management and slot.role == "standby" and slot.state == "standby"
                    and slot.pid is not None and slot.card.slot not in self.demoted
                    and slot.card.slot in self.mgmt_synced
                    and time.monotonic() - self.mgmt_seen.get(slot.card.slot, 0.0) <= budget):  # fmt: skip
                return slot
        return None

    async def mgmt_watch(self) -> None:
        """A hung active: its heartbeats stop (after its first one, so a booting one counts)."""
        budget = max(self.interval * self.liveness, MGMT_HANG_S)
        while not self.stopping.is_set():
            await asyncio.sleep(self.interval / 4)
            active = self.active_mgmt
            seen = self.mgmt_seen.get(active) if active is not None else None
            if seen is not None and time.monotonic() - seen > budget:
                if self._mgmt_standby() is not None:
                    self.mgmt_takeover(f"missed {self.liveness} heartbeats", since=seen)

    def mgmt_exited(self, slot) -> bool:
        """The active MIO's process exited: True when the standby took over."""
        if self._mgmt_standby() is None:
            return False
        self.mgmt_takeover("process exited", since=None)
        return True

    def mgmt_takeover(self, why: str, since: float | None, planned: bool = False) -> None:
        old, new = self.slots[self.active_mgmt], self._mgmt_standby()
        old.role, new.role = "standby", "active"
        new.state = "active"
        self.epoch += 1
        self.node.epoch = self.epoch
        self.active_mgmt = new.card.slot
        if old.pid is not None:
            self.demoted.add(old.card.slot)  # it steps down when it is heard again
        self.mgmt_seen.pop(old.card.slot, None)
        self.mgmt_synced.discard(new.card.slot)
        now = time.monotonic()
        record = {"from": old.card.slot, "to": new.card.slot, "why": why, "epoch": self.epoch,
                  "at": now, "detection_ms": round((now - since) * 1e3, 1) if since else None,
                  "planned": planned}  # fmt: skip
        self.mgmt_takeovers.append(record)
        log.warning("MIO %d %s: MIO %d takes over, epoch %d", old.card.slot, why,
                    new.card.slot, self.epoch)  # fmt: skip
        self._spawn(self._mgmt_tell(new.card.slot, record))

    async def _mgmt_tell(self, slot: int, record: dict) -> None:
        try:
            done = await self.pending.call(
                self.bus, Request("mgmt.takeover", {"epoch": self.epoch, "why": record["why"]}),
                to=f"mgmt-{slot}".encode(), timeout=10,
            )  # fmt: skip
        except (TimeoutError, RpcError) as exc:
            log.error("MIO %d did not take over: %s", slot, exc)
            return
        record["active_ms"] = round((time.monotonic() - record["at"]) * 1e3, 1)
        record["cards"] = done.get("cards") if isinstance(done, dict) else None
        for n, s in self.slots.items():  # now the new active's sockets are bound: move over
            if not s.card.is_management and s.pid is not None:
                self.bus.send(Request("mgmt.moved", {"slot": slot, "epoch": self.epoch}),
                              to=f"card-{n}".encode())  # fmt: skip
