"""The management card process: asyncio + zmq loop; the only I/O of the supervisor.

    python -m supervisor.runner --run-dir DIR --slot N

It says hello to the backplane (which grants the epoch and the role), applies the
boot configuration, then binds the control ROUTER (cards), the state PUB (per-card
Clone streams) and the CLI ROUTER, behind a ZAP handler started first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import secrets
import signal
import sys

from chassis.clock import MonotonicClock, WallClock
from chassis.ipc import keys as keyring
from chassis.ipc.envelope import Envelope
from chassis.ipc.messages import (
    Ack,
    CardStates,
    CredUpdate,
    Error,
    Heartbeat,
    Hello,
    Power,
    ProcEvent,
    Ready,
    Register,
    Request,
    Update,
)
from chassis.ipc.rpc import Pending, RpcError
from chassis.ipc.rundir import RunDir
from chassis.ipc.sockets import Channel, Incoming, Node
from supervisor.cards import MANAGEMENT, CardManager
from supervisor.cli import CommandFailure, Engine
from supervisor.fanout import STREAMS, Fanout
from supervisor.pki import cmp_commands
from supervisor.pki import commands as pki_commands
from supervisor.pki.enrollment import CmpService, Outstanding
from supervisor.pki.expiry import ExpiryWatch
from supervisor.pki.service import PkiService
from supervisor.workers import Workers

log = logging.getLogger("supervisor")

BEACON_EVERY = 5  # heartbeat intervals between sequence beacons
VERSION = {
    "image_version": "21.28.0-sim",
    "build": "segw-sim 0.1.0",
    "description": "StarOS SeGW chassis simulator",
}


def card_topic(slot: int) -> bytes:
    # NUL-terminated so that topic "slot-1" never prefix-matches "slot-10".
    return f"slot-{slot}\0".encode()


BEACON_TOPIC = b"beacon\0"


def _read_json(path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _modulus(key_pem: str) -> int:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    return load_pem_private_key(
        key_pem.encode(), None, unsafe_skip_rsa_key_validation=True
    ).key_size


def lab_placeholders(text: str, lab: dict) -> str:
    """`${lab.ca.url}` and friends: the lab's addresses are chosen when the chassis starts."""

    def value(m: re.Match) -> str:
        return str(lab.get(m.group(1), {}).get(m.group(2), m.group(0)))

    return re.sub(r"\$\{lab\.(\w+)\.(\w+)\}", value, text)


class System:
    """What the CLI engine may ask of the running supervisor (see supervisor.cli)."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.platform = sup.manifest["platform"]

    def card_table(self) -> list[dict]:
        return self.sup.card_table()

    def card_reboot(self, slot: int, force: bool) -> str:
        return self.sup.reboot(slot)

    def version(self) -> dict:
        return dict(VERSION)

    @property
    def pki(self) -> PkiService:
        return self.sup.pki

    def credentials_changed(self) -> None:
        self.sup.credentials_changed()

    def credential_report(self, kind: str, name: str | None) -> list[dict]:
        return self.sup.credential_report(kind, name)

    async def cmp_fetch(self, card: int | None, name: str, ca: str) -> str:
        return await self.sup.cmp_fetch(card, name, ca)

    def propagation(self) -> list[float]:
        return list(self.sup.fanout.propagation)

    @property
    def cmp(self) -> CmpService:
        return self.sup.cmp

    async def cmp_enroll(self, kind: str, args: dict, boot: bool, card: int | None = None) -> str:
        return await self.sup.cmp_enroll(kind, args, boot, card=card)


class Supervisor:
    def __init__(self, run: RunDir, slot: int) -> None:
        self.run, self.slot = run, slot
        self.manifest = run.manifest()
        self.topology = self.manifest["topology"]
        timers = self.manifest["timers"]
        self.interval, self.liveness = timers["interval"], timers["liveness"]
        me = next(c for c in self.topology["cards"] if c["slot"] == slot)
        self.role = me["role"]
        self.node = Node(run.keys, f"{me['type']}-{slot}", key_name="mgmt")
        self.mono, self.wall = MonotonicClock(), WallClock()
        self.cards = CardManager.from_topology(self.topology, self.interval, self.liveness)
        self.packet_slots = [s for s, c in self.cards.cards.items() if c.type not in MANAGEMENT]
        self.fanout = Fanout(self.packet_slots, self._publish, self._unicast)
        self.platform = self.manifest["platform"]
        self.workers = Workers()
        self.pki = PkiService(run.root, run.keys, self.workers, self.wall.datetime)
        self.vsm_fetch: dict[int, dict] = {}  # ASR 9000: what each VSM fetched
        self.cmp = CmpService(run.flash / "cmp-journal", self.wall.datetime, os.urandom)
        self.origins = _read_json(run.flash / "cmp-origins.json")  # cert -> {url, ca, modulus}
        self.expiry = ExpiryWatch(_read_json(run.flash / "expiry-marks.json"))
        self._not_after: dict[tuple[str, int], object] = {}
        self._updating: set[str] = set()
        self.engine = Engine(System(self), plugins=[pki_commands.register, cmp_commands.register])
        self.published_version = -1
        self.sessions: dict[str, object] = {}
        self.background: set[asyncio.Task] = set()
        self.pending = Pending()
        self.bp: Channel | None = None
        self.ctl: Channel | None = None
        self.pub: Channel | None = None
        self.cli: Channel | None = None
        self.stopping = asyncio.Event()

    # --- start-up ------------------------------------------------------------

    async def serve(self) -> None:
        keys = self.run.keys
        ep = self.manifest["endpoints"]
        self.bp = self.node.dealer(
            ep["backplane"], keyring.public_key(keys, "backplane"), f"mgmt-{self.slot}"
        )
        self._listen(self.bp, self.on_backplane)
        tasks = []
        hello = await self.pending.call(
            self.bp, Hello(self.slot, self.role, os.getpid()), timeout=10
        )
        self.node.epoch, self.role = hello["epoch"], hello["role"]
        log.info("slot %d: %s, epoch %d", self.slot, self.role, self.node.epoch)
        if self.role == "active":
            for entry in hello["slots"]:
                if entry["pid"] and entry["slot"] in self.packet_slots:
                    self.cards.on_started(entry["slot"], entry["pid"], self.mono.now())
                elif entry["slot"] in self.cards.cards and entry["type"] in MANAGEMENT:
                    self.cards.cards[entry["slot"]].pid = entry["pid"]
                    self.cards.cards[entry["slot"]].state = entry["state"]
            self.cards.cards[self.slot].state, self.cards.cards[self.slot].pid = (
                "active",
                os.getpid(),
            )
            boot = lab_placeholders(
                self.topology.get("startup_config", ""), self.manifest.get("lab", {})
            )
            for err in await self.engine.apply_boot_async(boot):
                # The line itself may hold key data: log its number and the reason only.
                log.warning("boot configuration line %d: %s", err.line_no, err.message)
            await self.restore_from_store()
            self.resume_cmp()
            self.node.start_auth()
            self.ctl = self.node.router(ep["control"])
            self.pub = self.node.publisher(ep["state"])
            self.cli = self.node.router(ep["cli"])
            self.publish_config()
            self.sync_credentials()
            self._listen(self.ctl, self.on_card)
            self._listen(self.cli, self.on_cli)
            tasks.append(asyncio.create_task(self._tick()))
        await self.stopping.wait()
        for t in tasks:
            t.cancel()
        self.node.close()

    def _listen(self, channel: Channel, handler) -> None:
        channel.listen(lambda inc: self._dispatch(channel, inc, handler))

    def _dispatch(self, channel: Channel, inc: Incoming, handler) -> None:
        if inc.error is not None:
            log.warning("bad message from %r: %s", inc.peer, inc.error.reason)
            channel.send(Error(inc.error.ref or 0, inc.error.reason), to=inc.peer)
            return
        if self.pending.resolve(inc):
            return
        try:
            handler(inc, inc.env)
        except Exception as exc:  # a bad request must not take the management card down
            log.exception("while handling %s", inc.env.type)
            channel.send(Error(inc.env.id, f"internal error: {type(exc).__name__}"), to=inc.peer)

    # --- the packet cards --------------------------------------------------

    def _card_slot(self, peer: bytes | None) -> int | None:
        name = (peer or b"").decode(errors="replace")
        if name.startswith("slot-") and name[5:].isdigit() and int(name[5:]) in self.packet_slots:
            return int(name[5:])
        return None

    def on_card(self, inc: Incoming, env: Envelope) -> None:
        slot, msg, now = self._card_slot(inc.peer), env.msg, self.mono.now()
        if slot is None:
            self.ctl.send(Error(env.id, f"unknown card identity {inc.peer!r}"), to=inc.peer)
        elif isinstance(msg, Heartbeat):
            self.cards.on_heartbeat(slot, msg.sent)
        elif isinstance(msg, Register):
            fresh = self.cards.cards[slot].boot_id != msg.boot_id
            why = (
                self.cards.on_register(slot, msg.pid, msg.boot_id, now)
                if msg.slot == slot
                else "slot mismatch"
            )
            if why is None and fresh:  # a new process holds nothing yet
                self.fanout.forget(slot)
                self.vsm_fetch.pop(slot, None)
            self.ctl.reply(inc, why is None, {"epoch": self.node.epoch}, why or "")
            log.info("slot %d: register pid %d %s", slot, msg.pid, why or "accepted")
        elif isinstance(msg, Request) and msg.method == "snapshot":
            stream = msg.args.get("stream", "config")
            if stream not in STREAMS:
                self.ctl.reply(inc, False, error=f"no stream {stream!r}")
            else:
                self.ctl.reply(inc, True, self.fanout.snapshot(slot, stream))
        elif isinstance(msg, Ready):
            self.fanout.on_ack(slot, "config", msg.seq, now)
            self.fanout.on_ack(slot, "cred", msg.cred_seq, now)
            self.cards.on_ready(slot, msg.seq, now)
        elif isinstance(msg, Ack):
            self.fanout.on_ack(slot, msg.stream, msg.seq, now)
            if msg.stream == "config":
                self.cards.on_ack(slot, msg.seq)
        elif isinstance(msg, Request) and msg.method == "ping":
            self.ctl.reply(inc, True, msg.args)
        elif isinstance(msg, Request) and msg.method == "cred-fetch":
            try:
                self.ctl.reply(inc, True, self.fetch_bundle(slot, msg.args))
            except CommandFailure as exc:
                self.ctl.reply(inc, False, error=exc.message)
        else:
            self.ctl.send(Error(env.id, f"supervisor does not handle {env.type}"), to=inc.peer)

    def _publish(self, slot: int, update: Update, seq: int) -> None:
        self.pub.send(update, topic=card_topic(slot), seq=seq)

    def _unicast(self, slot: int, update: CredUpdate, seq: int) -> None:
        self.ctl.send(update, to=f"slot-{slot}".encode(), seq=seq)

    def publish_config(self) -> None:
        if self.engine.version == self.published_version:
            return
        self.published_version = self.engine.version
        projection = self.engine.projection()
        for slot in self.packet_slots:
            self.fanout.set_config(slot, "config", projection)

    def sync_credentials(self) -> None:
        """Push the store's certificates and keys to every packet card (ASR 5500 only)."""
        wanted = self.pki.pushed_credentials() if self.platform == "asr5500" else {}
        in_service = [s for s in self.packet_slots if self.cards.cards[s].in_service]
        self.fanout.push_creds(wanted, in_service, self.mono.now())

    async def _tick(self) -> None:
        step = self.interval / 4
        beat = beacon = expiry = 0.0
        while True:
            await asyncio.sleep(step)
            self.ctl.pump()  # deadlines only after every queued heartbeat
            now = self.mono.now()
            for slot in self.cards.check(now):
                log.warning("slot %d: failed: %s", slot, self.cards.cards[slot].failure)
            if now - beat >= self.interval:
                beat = now
                for slot, card in self.cards.cards.items():
                    if (
                        slot in self.packet_slots
                        and card.state in ("booting", "active", "standby")
                        and card.boot_id
                    ):
                        self.ctl.send(Heartbeat(now), to=f"slot-{slot}".encode())
            if now - beacon >= self.interval * BEACON_EVERY:
                beacon = now
                self.pub.send(self.fanout.beacon(), topic=BEACON_TOPIC)
            self.publish_config()
            if now - expiry >= 1.0:
                expiry = now
                try:
                    self.expiry_check()
                except Exception:  # a bad certificate must not stop the heartbeats
                    log.exception("certificate expiry check")
            if self.cards.take_changed():
                self.bp.send(CardStates(self.cards.states()))

    # --- the backplane -------------------------------------------------------

    def on_backplane(self, inc: Incoming, env: Envelope) -> None:
        msg, now = env.msg, self.mono.now()
        if not isinstance(msg, ProcEvent) or msg.slot not in self.cards.cards:
            return
        card = self.cards.cards[msg.slot]
        if card.type in MANAGEMENT:
            card.pid = msg.pid if msg.event != "exited" else None
            card.state = {"started": "booting", "hello": card.role, "exited": "failed"}.get(
                msg.event, card.state
            )
        elif msg.event == "started":
            self.cards.on_started(msg.slot, msg.pid, now)
        elif msg.event == "exited":
            self.cards.on_exited(msg.slot, msg.pid, now, msg.code)
            log.warning("slot %d: process %d exited (%s)", msg.slot, msg.pid, msg.code)

    # --- what the CLI asks -----------------------------------------------------

    def card_table(self) -> list[dict]:
        rows = self.cards.table(self.mono.now())
        for row in rows:
            if row["slot"] in self.packet_slots:
                row["cred_seq"] = self.fanout.acked["cred"][row["slot"]]
            if self.platform == "asr9000" and row["type"] == "vsm":
                fetched = self.vsm_fetch.get(row["slot"])
                row["fetch"] = fetched
                row["attach"] = (
                    f"cert {fetched['name']} v{fetched['generation']}" if fetched else "no cert"
                )
        return rows

    # --- certificates and keys ------------------------------------------------------

    async def restore_from_store(self) -> None:
        """Certificates installed before a restart are in the store, maybe not in the boot
        configuration: configure them again from their local copies."""
        lines = []
        for (kind, name), entry in self.pki.store.entries().items():
            if kind != "csr" and self.engine.config.root.get(kind, name) is None:
                lines.append(pki_commands._certificate_line(kind, name, entry, None))
        if lines:
            text = "config\n" + "\n".join(f"  {ln}" for ln in lines) + "\nend\n"
            for err in await self.engine.apply_boot_async(text):
                log.error("restoring the certificate store: %s", err.message)

    # --- CMPv2 ------------------------------------------------------------------------

    async def cmp_enroll(
        self, kind: str, args: dict, boot: bool, wait_all: bool = False, card: int | None = None
    ) -> str:
        """Run one CMP transaction; return when it ends, or once the CA makes it wait
        (`wait_all`: only when it ends)."""
        from cryptography.hazmat.primitives.serialization import Encoding

        from supervisor.pki import credentials as cred
        from supervisor.pki import keygen
        from supervisor.pki.cmp.client import Enrollment, Protection, Transaction

        store, entries = self.pki.store, self.pki.store.entries()
        name = args.get("cert") or args["old"]
        if self.platform == "asr9000" and card is None and not boot and not wait_all:
            raise CommandFailure(
                "on ASR 9000 CMP runs for one VSM: chassis exec --card SLOT 'cmp ...'"
            )
        if card is not None:
            vsm = self.cards.cards.get(card)
            if self.platform != "asr9000" or vsm is None or vsm.type != "vsm" or not vsm.in_service:
                raise CommandFailure(
                    f"--card {card}: CMP runs for a VSM in service, on ASR 9000 only"
                )
        ca = args["ca"]
        if ("ca-certificate", ca) not in entries:
            raise CommandFailure(f"ca-root {ca} is not a configured ca-certificate")
        if kind == "ir" and boot and self._valid_certificate(name):
            return f"Info: certificate {name} is present and valid; not enrolling again"
        if name in self.cmp.outstanding:
            raise CommandFailure(f"a CMP request for certificate {name} is already outstanding")
        ca_der = cred.load_certificate(
            store.read("ca-certificate", ca, "cert.pem"), "pem"
        ).public_bytes(Encoding.DER)
        old_der = old_key = None
        old_chain: tuple[bytes, ...] = ()
        if kind in ("cr", "kur"):
            old_der, old_key, old_chain = self._signer(args["old"], "current-cert")
        reuse = self.engine.config.root.get("cmp-cert-store")
        reuse_from = args["old"] if kind == "kur" else name
        entry = entries.get(("certificate", reuse_from))
        if (
            reuse is not None
            and reuse.data.get("key_reuse")
            and entry
            and "key.pem" in entry["files"]
        ):
            key_pem = store.read("certificate", reuse_from, "key.pem")
        else:
            try:
                key_pem = await self.workers.run(keygen.generate_rsa, int(args["modulus"]))
            except cred.CredentialError as exc:
                raise CommandFailure(str(exc)) from None
        hash_line = self.engine.config.root.get("cmp-hash-algorithm")
        hash_alg = hash_line.data["hash"] if hash_line else "sha256"  # 3GPP TS 33.310 forbids SHA-1
        if kind == "ir" and args.get("vendor"):
            vendor_der, vendor_key, vendor_chain = self._signer(args["vendor"], "vendor-cert")
            protection = Protection(
                cert_der=vendor_der, key_pem=vendor_key, extra_certs=vendor_chain, hash_alg=hash_alg
            )
        elif kind == "ir":
            protection = Protection(
                secret=args["psk"].encode(), reference=name.encode(), hash_alg=hash_alg
            )
        else:
            # The intermediates go along in extraCerts, so the CA can build our chain.
            protection = Protection(
                cert_der=old_der, key_pem=old_key, extra_certs=old_chain, hash_alg=hash_alg
            )
        enrollment = Enrollment(
            kind=kind,
            new_key_pem=key_pem,
            subject=args.get("subject"),
            old_cert_der=old_der if kind == "kur" else None,
            ca_root_der=ca_der,
        )
        try:
            tx = Transaction(enrollment, protection, rand=os.urandom, now=self.wall.datetime)
            first = tx.start()
        except Exception as exc:  # a subject the codec cannot encode, say
            raise CommandFailure(f"cannot build the {kind} request: {exc}") from None
        out = Outstanding(
            kind, name, ca, args["url"], self.wall.datetime().isoformat(timespec="seconds")
        )
        out.key_pem = key_pem.decode()
        out.card = card
        task = out.task = self._spawn(self._cmp_transaction(tx, out, first))
        if wait_all:
            await task
        while not task.done() and out.state != "polling":
            await asyncio.wait({task}, timeout=0.02)
        if not task.done():
            return f"Info: the CA asked to wait; polling for certificate {name} in the background (show cmp outstanding-req)"
        outcome = task.result()
        if not outcome.ok:
            raise CommandFailure(f"cmp {kind} for certificate {name}: {outcome.text}")
        return f"Info: certificate {name} issued by the CA and installed"

    async def _cmp_transaction(self, tx, out: Outstanding, first: bytes | None):
        outcome = await self.cmp.run(tx, out, first=first)
        if outcome.ok:
            self.install_issued(
                out.cert_name, out.key_pem.encode(), outcome.cert_der, outcome.chain
            )
            modulus = _modulus(out.key_pem)
            self.origins[out.cert_name] = {"url": out.url, "ca": out.ca_root, "modulus": modulus}
            self.run.write_json(self.run.flash / "cmp-origins.json", self.origins)
            if out.card is not None:  # ASR 9000: the VSM the CMP ran for holds it at once
                try:
                    await self._vsm_fetch(out.card, out.cert_name, out.ca_root)
                except CommandFailure as exc:
                    log.warning("%s", exc.message)
        return outcome

    # --- certificate expiry: the trap and the automatic update ------------------------------

    def expiry_check(self) -> None:
        from supervisor.pki import credentials as cred

        certs = {}
        for (_, name), entry in self.pki.store.entries("certificate").items():
            key = (name, entry["generation"])
            if key not in self._not_after:
                cert = cred.load_certificate(
                    self.pki.store.read("certificate", name, "cert.pem"), "pem"
                )
                self._not_after[key] = cert.not_valid_after_utc
            certs[name] = (entry["generation"], self._not_after[key])
        trap = self.engine.config.root.get("cmp-cert-trap")
        auto = self.engine.config.root.get("cmp-auto-fetch")
        actions = self.expiry.due(
            certs,
            self.wall.datetime(),
            trap.data["hours"] if trap else None,
            {auto.data["name"]: auto.data["days"]} if auto else {},
            busy=set(self.cmp.outstanding) | self._updating,
        )
        for action in actions:
            if action.kind == "trap":
                self.expiry.trapped(action)  # marked first: at most once, even across a restart
                self._save_marks()
                self._spawn(self._send_traps(action))
            else:
                self._updating.add(action.name)
                self._spawn(self._auto_update(action, auto.data["ca"]))

    async def _send_traps(self, action) -> None:
        from supervisor.snmp import Target, send_expiry_trap

        hours = int((action.not_after - self.wall.datetime()).total_seconds() // 3600)
        for line in self.engine.config.root.all("snmp-target"):
            target = Target(
                line.name, line.data["address"], line.data["port"], line.data["community"]
            )
            error = await send_expiry_trap(target, action.name, action.not_after.isoformat(), hours)
            level = logging.WARNING if error else logging.INFO
            log.log(
                level, "expiry trap for %s to %s: %s", action.name, target.name, error or "sent"
            )

    async def _auto_update(self, action, ca: str) -> None:
        origin = self.origins.get(action.name)
        try:
            if origin is None:
                raise CommandFailure(
                    f"no CA URL known for certificate {action.name}: enroll it with CMP first"
                )
            args = {
                "old": action.name,
                "modulus": origin["modulus"],
                "ca": ca,
                "url": origin["url"],
            }
            log.info(
                "certificate %s expires %s: automatic key update", action.name, action.not_after
            )
            await self.cmp_enroll("kur", args, boot=False, wait_all=True)
            entry = self.pki.store.entries("certificate").get(("certificate", action.name))
            if entry is None or entry["generation"] == action.generation:
                raise CommandFailure("the key update did not produce a new certificate")
            self.expiry.updated(action)
        except CommandFailure as exc:
            delay = self.expiry.update_failed(action, self.wall.datetime())
            log.warning(
                "automatic update of %s failed (%s); next try in %.0f s",
                action.name,
                exc.message,
                delay,
            )
        finally:
            self._updating.discard(action.name)
            self._save_marks()

    def _save_marks(self) -> None:
        self.run.write_json(self.run.flash / "expiry-marks.json", self.expiry.marks)

    def resume_cmp(self) -> None:
        """Requests journaled by a previous supervisor go on polling."""
        for entry in self.cmp.journaled():
            from supervisor.pki.cmp.client import (
                Transaction,
            )  # ASN.1 modules: slow, load when needed

            out = Outstanding(
                entry["kind"],
                entry["cert_name"],
                entry["ca_root"],
                entry["url"],
                entry["started"],
                state=entry["state"],
                next_poll=entry["next_poll"],
                polls=entry["polls"],
                key_pem=entry["key_pem"],
            )
            try:
                tx = Transaction.from_journal(
                    entry["transaction"], rand=os.urandom, now=self.wall.datetime
                )
            except Exception as exc:
                log.error("cannot resume the CMP request for %s: %s", out.cert_name, exc)
                self.cmp.clear(out.cert_name)
                continue
            log.info("resuming the CMP %s request for certificate %s", out.kind, out.cert_name)
            out.task = self._spawn(self._cmp_transaction(tx, out, None))

    def _signer(self, name: str, what: str) -> tuple[bytes, bytes, tuple[bytes, ...]]:
        """A configured certificate with its key and chain, as DER/PEM for CMP protection."""
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        store, entries = self.pki.store, self.pki.store.entries()
        entry = entries.get(("certificate", name))
        if entry is None or "key.pem" not in entry["files"]:
            raise CommandFailure(f"{what} {name} is not a configured certificate with its key")
        cert = x509.load_pem_x509_certificate(store.read("certificate", name, "cert.pem"))
        chain = ()
        if "chain.pem" in entry["files"]:
            pems = x509.load_pem_x509_certificates(store.read("certificate", name, "chain.pem"))
            chain = tuple(c.public_bytes(Encoding.DER) for c in pems)
        return cert.public_bytes(Encoding.DER), store.read("certificate", name, "key.pem"), chain

    def install_issued(
        self, name: str, key_pem: bytes, cert_der: bytes, chain: tuple[bytes, ...]
    ) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        files = {
            "cert.pem": x509.load_der_x509_certificate(cert_der).public_bytes(Encoding.PEM),
            "key.pem": key_pem,
        }
        if chain:
            files["chain.pem"] = b"".join(
                x509.load_der_x509_certificate(c).public_bytes(Encoding.PEM) for c in chain
            )
        entry = self.pki.store.install("certificate", name, files)
        line = pki_commands._certificate_line("certificate", name, entry, None)
        config = self.engine.config
        config.begin()
        self.engine.config.root.set_line(
            "certificate",
            name,
            line,
            {"name": name, "generation": entry["generation"]},
            secret=True,
            display=line,
        )
        config.commit()
        self.credentials_changed()

    def _valid_certificate(self, name: str) -> bool:
        from supervisor.pki import credentials as cred

        if ("certificate", name) not in self.pki.store.entries("certificate"):
            return False
        cert = cred.load_certificate(self.pki.store.read("certificate", name, "cert.pem"), "pem")
        return cred.validity_warning(cert, self.wall.datetime()) is None

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    def credentials_changed(self) -> None:
        if self.ctl is None:  # still booting: the first sync follows the binds
            return
        self.sync_credentials()
        if self.platform == "asr9000":
            self._auto_fetch()

    def _auto_fetch(self) -> None:
        """`cmp auto-fetch`: each VSM holding an older version fetches again by itself."""
        line = self.engine.config.root.get("cmp-auto-fetch")
        if line is None:
            return
        name, ca = line.data["name"], line.data["ca"]
        entry = self.pki.store.entries("certificate").get(("certificate", name))
        if entry is None:
            return
        for slot, card in self.cards.cards.items():
            held = self.vsm_fetch.get(slot)
            if (
                card.type == "vsm"
                and card.in_service
                and held
                and held["generation"] != entry["generation"]
            ):
                task = asyncio.create_task(self._vsm_fetch(slot, name, ca))
                self.background.add(task)
                task.add_done_callback(self.background.discard)

    def fetch_bundle(self, slot: int, args: dict) -> dict:
        """What `cmp fetch` hands a VSM: the certificate with its key, and the CA root."""
        name, ca = str(args.get("name", "")), str(args.get("ca", ""))
        entries = self.pki.store.entries()
        if ("certificate", name) not in entries:
            raise CommandFailure(f"certificate {name} is not configured on the management card")
        if ("ca-certificate", ca) not in entries:
            raise CommandFailure(f"ca-certificate {ca} is not configured on the management card")
        if "key.pem" not in entries[("certificate", name)]["files"]:
            raise CommandFailure(f"certificate {name} has no private key")
        return {
            f"certificate/{name}": self.pki.bundle_entry("certificate", name),
            f"ca-certificate/{ca}": self.pki.bundle_entry("ca-certificate", ca),
        }

    async def cmp_fetch(self, card: int | None, name: str, ca: str) -> str:
        if self.platform != "asr9000":
            raise CommandFailure(
                "cmp fetch is for ASR 9000 VSMs; on ASR 5500 certificates are pushed to every DPC"
            )
        if card is None:
            raise CommandFailure(
                "cmp fetch runs for one VSM: chassis exec --card SLOT 'cmp fetch ...'"
            )
        slot = self.cards.cards.get(card)
        if slot is None or slot.type != "vsm" or not slot.in_service:
            raise CommandFailure(f"card {card} is not a VSM in service")
        self.fetch_bundle(card, {"name": name, "ca": ca})  # fail here, clearly, if absent
        held = await self._vsm_fetch(card, name, ca)
        return f"Info: VSM {card} fetched certificate {name} (version {held['generation']}) and CA root {ca}"

    async def _vsm_fetch(self, slot: int, name: str, ca: str) -> dict:
        try:
            summary = await self.pending.call(
                self.ctl,
                Request("cmp-fetch", {"name": name, "ca": ca}),
                to=f"slot-{slot}".encode(),
                timeout=5,
            )
        except (TimeoutError, RpcError) as exc:
            log.warning("slot %d: cmp fetch failed: %s", slot, exc)
            raise CommandFailure(f"VSM {slot}: {exc}") from None
        held = {"name": name, "ca": ca, "generation": summary.get(f"certificate/{name}")}
        self.vsm_fetch[slot] = held
        log.info("slot %d: fetched certificate %s version %s", slot, name, held["generation"])
        return held

    def credential_report(self, kind: str, name: str | None) -> list[dict]:
        from supervisor.pki import credentials as cred

        rows = []
        for (k, n), entry in sorted(self.pki.store.entries(kind).items()):
            if name is not None and n != name:
                continue
            cert = cred.load_certificate(self.pki.store.read(k, n, "cert.pem"), "pem")
            info = cred.describe(cert, self.wall.datetime(), n)
            cards = {}
            for slot in self.packet_slots:
                if self.platform == "asr5500":
                    held = self.fanout.holds(slot, f"{k}/{n}")
                    cards[str(slot)] = f"v{entry['generation']}" if held else "pending"
                else:
                    got = self.vsm_fetch.get(slot)
                    if got and n in (got["name"], got["ca"]):
                        cards[str(slot)] = f"v{got['generation']} (fetched)"
            rows.append(
                {
                    **info,
                    "name": n,
                    "generation": entry["generation"],
                    "url": entry["urls"]["cert.pem"],
                    "cards": cards,
                }
            )
        return rows

    def reboot(self, slot: int) -> str:
        card = self.cards.cards.get(slot)
        if card is None:
            raise CommandFailure(f"Failure: slot {slot} is empty")
        if card.type in MANAGEMENT:
            raise CommandFailure(f"Failure: card {slot} is a management card; use card switch")
        self.cards.on_reboot(slot, self.mono.now())
        self.bp.send(Power(slot, "restart"))
        return f"Info: card {slot} is rebooting"

    def _cli_done(self, inc: Incoming, sid: str, session, res) -> None:
        if res.close:
            self.sessions.pop(sid, None)
        reply = {
            "output": res.output,
            "data": res.data,
            "error": res.error,
            "close": res.close,
            "prompt": session.prompt,
        }
        self.cli.reply(inc, True, reply)
        self.publish_config()

    def on_cli(self, inc: Incoming, env: Envelope) -> None:
        msg = env.msg
        if isinstance(msg, Request) and msg.method == "ping":  # round-trip probe (benchmarks)
            self.cli.reply(inc, True, msg.args)
            return
        if isinstance(msg, Request) and msg.method == "clock.warp":  # fault: move the wall clock
            seconds = msg.args.get("seconds")
            if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
                self.cli.reply(inc, False, error="clock.warp needs a number of seconds")
                return
            self.wall.warp(float(seconds))
            log.warning(
                "wall clock warped by %+.0f s, now %s", seconds, self.wall.datetime().isoformat()
            )
            self.cli.reply(
                inc, True, {"now": self.wall.datetime().isoformat(), "offset": self.wall.offset}
            )
            return
        if not isinstance(msg, Request) or not msg.method.startswith("cli."):
            self.cli.send(Error(env.id, f"CLI socket does not handle {env.type}"), to=inc.peer)
            return
        args = msg.args
        if msg.method == "cli.open":
            card = args.get("card")
            if card is not None and card not in self.packet_slots:
                self.cli.reply(inc, False, error=f"--card {card}: no packet card in that slot")
                return
            sid = secrets.token_hex(8)
            self.sessions[sid] = session = self.engine.new_session(now=self.wall.datetime)
            session.card = card  # the VSM that card-specific commands (cmp) act for
            self.cli.reply(inc, True, {"session": sid, "prompt": session.prompt})
            return
        session = self.sessions.get(args.get("session"))
        if session is None:
            self.cli.reply(inc, False, error="no such CLI session")
        elif msg.method == "cli.exec":
            res = session.execute(str(args.get("line", "")))
            if res.pending is None:
                self._cli_done(inc, args["session"], session, res)
            else:  # the command waits on I/O; other sessions and the cards go on meanwhile
                task = asyncio.create_task(res.pending())
                self.background.add(task)
                task.add_done_callback(self.background.discard)
                task.add_done_callback(
                    lambda t: self._cli_done(inc, args["session"], session, t.result())
                )
        elif msg.method == "cli.complete":
            self.cli.reply(inc, True, session.complete(str(args.get("text", ""))))
        elif msg.method == "cli.help":
            self.cli.reply(inc, True, [list(h) for h in session.help(str(args.get("text", "")))])
        elif msg.method == "cli.close":
            self.sessions.pop(args["session"], None)
            self.cli.reply(inc, True)
        else:
            self.cli.reply(inc, False, error=f"unknown CLI method {msg.method}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="supervisor.runner")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--slot", type=int, required=True)
    args = parser.parse_args(argv)
    run = RunDir(args.run_dir)
    logging.basicConfig(
        stream=sys.stdout,
        level=logging.DEBUG if os.environ.get("CHASSIS_DEBUG") else logging.INFO,
        format=f"%(asctime)s slot{args.slot} %(name)s %(levelname)s %(message)s",
    )
    sup = Supervisor(run, args.slot)

    async def runner():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, sup.stopping.set)
        await sup.serve()

    asyncio.run(runner())
    return 0


if __name__ == "__main__":
    sys.exit(main())
