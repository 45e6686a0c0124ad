"""What the engine needs from the running chassis; the supervisor implements it."""

from __future__ import annotations

from typing import Protocol


class System(Protocol):
    platform: str  # "asr5500" | "asr9000"

    def card_table(self) -> list[dict]:
        """One dict per slot, e.g. {"slot": 1, "type": "dpc", "label": "DPC", "role": "active",
        "state": "active", "pid": 123, "uptime_s": 1.5, "spof": False}. Optional keys:
        "description" (Card Type text), "attach". A slot with type None is shown empty."""
        ...

    def card_reboot(self, slot: int, force: bool) -> str:
        """Return an info line, or raise CommandFailure."""
        ...

    def version(self) -> dict:
        """{"image_version": "21.28.0-sim", "build": ..., "description": ..., "date": ...,
        "boot_image": ..., "commit": ...}; missing keys are left out of `show version`."""
        ...
