"""CMPv2 transactions of the management card: transport, journal, statistics, history.

The protocol itself is the sans-IO client in supervisor/pki/cmp/; this module moves its
bytes over HTTP (RFC 6712: POST application/pkixcmp, a new connection per message,
bounded timeouts and retries), waits out checkAfter, and keeps what StarOS shows:
outstanding requests, statistics per message and transaction type, and the last 100
transactions. An outstanding request is journaled (0600, atomically) before its first
message leaves, so a restarted supervisor resumes polling instead of losing it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from chassis.ipc.rundir import atomic_write

log = logging.getLogger("cmp")

CONTENT_TYPE = "application/pkixcmp"
HTTP_TIMEOUT = 10.0
HTTP_TRIES = 3
MAX_POLL_WAIT = 3600.0  # longest checkAfter honoured in one go


class TransportError(Exception):
    pass


async def post(url: str, der: bytes, timeout: float = HTTP_TIMEOUT) -> bytes:
    """One CMP message over HTTP, retried on connection failures with a short back-off."""
    import httpx

    last = ""
    for attempt in range(HTTP_TRIES):
        try:
            async with httpx.AsyncClient(timeout=timeout, trust_env=False) as http:
                # One connection per message (RFC 6712); say so, since OpenSSL's server
                # cancels a transaction whose kept-alive connection just drops.
                headers = {"Content-Type": CONTENT_TYPE, "Connection": "close"}
                resp = await http.post(url, content=der, headers=headers)
            if resp.status_code != 200:
                raise TransportError(f"HTTP {resp.status_code} from {url}")
            if resp.headers.get("content-type", "").split(";")[0].strip() != CONTENT_TYPE:
                raise TransportError(
                    f"{url} answered {resp.headers.get('content-type')!r}, not {CONTENT_TYPE}"
                )
            return resp.content
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            last = f"{type(exc).__name__}: {exc}".strip(": ")
            await asyncio.sleep(0.2 * 2**attempt)
    raise TransportError(f"CA at {url} unreachable after {HTTP_TRIES} tries ({last})")


@dataclass
class Outstanding:
    """A transaction that has sent its request and is not finished."""

    kind: str
    cert_name: str
    ca_root: str
    url: str
    started: str
    state: str = "sending"
    next_poll: float | None = None  # wall-clock seconds
    polls: int = 0
    key_pem: str = ""  # the new key pair being certified (journaled, 0600)
    tx_id: int = 0
    card: int | None = None  # ASR 9000: the VSM this CMP runs for
    task: asyncio.Task | None = field(default=None, repr=False)  # cancelled by `clear cmp`
    wake: asyncio.Event = field(default_factory=asyncio.Event, repr=False)


@dataclass
class Outcome:
    ok: bool
    text: str
    cert_der: bytes | None = None
    chain: tuple[bytes, ...] = ()


class CmpService:
    def __init__(
        self,
        journal_dir: Path,
        now: Callable[[], datetime],
        rand: Callable[[int], bytes],
        transport: Callable[[str, bytes], Awaitable[bytes]] = post,
    ) -> None:
        self.journal_dir = Path(journal_dir)
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.journal_dir, 0o700)
        self.now, self.rand, self.transport = now, rand, transport
        self.sent: Counter[str] = Counter()
        self.received: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.results: Counter[tuple[str, str]] = Counter()  # (transaction type, success|failure)
        self.history: deque[dict] = deque(maxlen=100)
        self.outstanding: dict[str, Outstanding] = {}
        # Awaited before each request goes out, its journal entry written: the standby MIO
        # acks that it knows of it (supervisor/ha.py); None without a standby.
        self.before_send = None
        self._seen: dict[int, tuple[Counter, Counter]] = {}  # per transaction: counts carried over
        self.taken_over = False  # statistics restored from an old active MIO (restore_stats)

    # --- one transaction -----------------------------------------------------------------

    async def run(self, tx, out: Outstanding, *, first: bytes | None = None) -> Outcome:
        """Drive `tx` to its end. `first` is the first request (None when resuming a poll)."""
        from supervisor.pki.cmp.client import Done, Failed, Send, Wait

        self.outstanding[out.cert_name] = out
        out.tx_id = id(tx)
        if first is None and self.taken_over:  # resumed: the old active counted the journal's
            self._seen[id(tx)] = (Counter(tx.sent), Counter(tx.received))
        self._journal(tx, out)
        try:
            step = Wait(0.0) if first is None else await self._exchange(tx, out, first)
            while True:
                if isinstance(step, Send):
                    step = await self._exchange(tx, out, step.der)
                elif isinstance(step, Wait):
                    out.state = "polling"
                    out.next_poll = self.now().timestamp() + min(step.check_after, MAX_POLL_WAIT)
                    self._journal(tx, out)
                    await self._sleep_until(out)
                    out.polls += 1
                    step = await self._exchange(tx, out, tx.poll())
                elif isinstance(step, Done):
                    return self._finish(out, Outcome(True, "success", step.cert_der, step.chain))
                elif isinstance(step, Failed):
                    if step.confirm is not None:  # tell the CA we refuse what it issued
                        try:
                            await self._exchange(tx, out, step.confirm)
                        except TransportError:
                            pass
                    self.failed[out.kind] += 1
                    reason = step.reason
                    extra = [f for f in step.fail_info if f not in reason]
                    if extra:
                        reason += f" ({', '.join(extra)})"
                    texts = [t for t in step.status_strings if t not in reason]
                    if texts:
                        reason += ": " + "; ".join(texts)
                    return self._finish(out, Outcome(False, reason))
        except TransportError as exc:
            self.failed[out.kind] += 1
            return self._finish(out, Outcome(False, str(exc)))

    async def _exchange(self, tx, out: Outstanding, der: bytes):
        # The transaction counts what it builds and parses; carry its new counts over.
        seen_sent, seen_received = self._seen.setdefault(id(tx), (Counter(), Counter()))
        new = tx.sent - seen_sent
        self.sent.update(new)
        seen_sent.update(new)
        if self.before_send is not None:
            await self.before_send(out.cert_name)
        try:
            answer = await self.transport(out.url, der)
        except TransportError:
            self.failed.update(new)
            raise
        step = tx.receive(answer)
        got = tx.received - seen_received
        self.received.update(got or Counter(malformed=1))
        seen_received.update(got)
        return step

    async def _sleep_until(self, out: Outstanding) -> None:
        """Wait for checkAfter (by the wall clock, so a warp or `cmp poll` cuts it short)."""
        out.wake.clear()
        while (left := out.next_poll - self.now().timestamp()) > 0:
            try:
                await asyncio.wait_for(out.wake.wait(), min(left, 1.0))
                return
            except TimeoutError:
                continue

    def poll_now(self, cert_name: str) -> bool:
        out = self.outstanding.get(cert_name)
        if out is None or out.state != "polling":
            return False
        out.wake.set()
        return True

    def _finish(self, out: Outstanding, outcome: Outcome) -> Outcome:
        self.outstanding.pop(out.cert_name, None)
        self._seen.pop(out.tx_id, None)
        (self.journal_dir / f"{out.cert_name}.json").unlink(missing_ok=True)
        self.results[(out.kind, "success" if outcome.ok else "failure")] += 1
        self.history.append(
            {
                "time": self.now().isoformat(timespec="seconds"),
                "type": out.kind,
                "cert": out.cert_name,
                "ca": out.ca_root,
                "result": "success" if outcome.ok else "failure",
                "reason": "" if outcome.ok else outcome.text,
                "polls": out.polls,
            }
        )
        log.log(
            logging.INFO if outcome.ok else logging.WARNING,
            "cmp %s %s: %s",
            out.kind,
            out.cert_name,
            outcome.text,
        )
        return outcome

    # --- the journal ------------------------------------------------------------------

    def _journal(self, tx, out: Outstanding) -> None:
        entry = {
            "kind": out.kind,
            "cert_name": out.cert_name,
            "ca_root": out.ca_root,
            "url": out.url,
            "started": out.started,
            "state": out.state,
            "next_poll": out.next_poll,
            "polls": out.polls,
            "key_pem": out.key_pem,
            "transaction": tx.to_journal(),  # holds the new key and maybe the PBM secret: 0600
        }
        atomic_write(self.journal_dir / f"{out.cert_name}.json", json.dumps(entry).encode(), 0o600)

    def journaled(self) -> list[dict]:
        entries = []
        for path in sorted(self.journal_dir.glob("*.json")):
            try:
                entries.append(json.loads(path.read_text()))
            except (OSError, ValueError) as exc:
                log.error("unreadable CMP journal entry %s: %s", path.name, exc)
        return entries

    def clear(self, cert_name: str) -> bool:
        """`clear cmp cert-name`: forget an outstanding request."""
        out = self.outstanding.pop(cert_name, None)
        if out is not None and out.task is not None:
            out.task.cancel()  # it must not poll, nor install, later
        path = self.journal_dir / f"{cert_name}.json"
        existed = path.exists()
        path.unlink(missing_ok=True)
        return out is not None or existed

    def stats(self) -> dict:
        """The statistics and history, as the standby MIO keeps them (supervisor/ha.py)."""
        return {
            "sent": dict(self.sent), "received": dict(self.received),
            "failed": dict(self.failed), "history": list(self.history),
            "results": [[kind, result, n] for (kind, result), n in self.results.items()],
        }  # fmt: skip

    def restore_stats(self, stats: dict) -> None:
        """A takeover: go on counting from what the old active MIO counted (a transaction
        resumed from its journal then counts only the messages sent and received here)."""
        for name in ("sent", "received", "failed"):
            getattr(self, name).update(stats.get(name) or {})
        self.results.update({(k, r): n for k, r, n in stats.get("results") or []})
        self.history.extend(stats.get("history") or [])
        self.taken_over = True

    def clear_statistics(self) -> None:
        for counter in (self.sent, self.received, self.failed, self.results):
            counter.clear()
