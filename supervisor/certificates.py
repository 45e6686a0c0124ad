"""The management card's certificate life cycle: store, CMPv2, expiry, VSM fetches.

Everything about certificates that the supervisor does between its sockets: enrolling and
renewing with CMP (supervisor/pki/cmp_commands.py asks), installing what the CA issued,
the expiry trap and the automatic update on the warpable wall clock, restoring the store
after a restart, and the ASR 9000 `cmp fetch` bundles. The supervisor (`sup`) provides the
configuration engine, the card table, the clocks and the control socket.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import TYPE_CHECKING

from chassis.ipc.messages import Request
from chassis.ipc.rpc import RpcError
from supervisor.cli import CommandFailure
from supervisor.pki import commands as pki_commands
from supervisor.pki.enrollment import CmpService, Outstanding
from supervisor.pki.expiry import ExpiryWatch
from supervisor.pki.service import PkiService

if TYPE_CHECKING:
    from supervisor.runner import Supervisor

log = logging.getLogger("supervisor")


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


class Certificates:
    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        run = sup.run
        self.pki = PkiService(run.root, run.keys, sup.workers, sup.wall.datetime)
        self.cmp = CmpService(run.flash / "cmp-journal", sup.wall.datetime, os.urandom)
        self.vsm_fetch: dict[int, dict] = {}  # ASR 9000: what each VSM fetched
        self.origins = _read_json(run.flash / "cmp-origins.json")  # cert -> {url, ca, modulus}
        self.expiry = ExpiryWatch(_read_json(run.flash / "expiry-marks.json"))
        self._not_after: dict[tuple[str, int], object] = {}
        self._updating: set[str] = set()

    # --- certificates and keys ------------------------------------------------------

    async def restore_from_store(self) -> None:
        """Certificates installed before a restart are in the store, maybe not in the boot
        configuration: give them their configuration lines back. The store's files stay as
        they are (re-installing them from their URLs would lose what only the store holds: the
        chain a CA returned with a CMP certificate, the Hash and URL address)."""
        store, config = self.pki.store, self.sup.engine.config
        restored = False
        for (kind, name), entry in store.entries().items():
            if kind == "csr" or config.root.get(kind, name) is not None:
                continue
            hash_url = (
                store.read(kind, name, "hash-url.txt").decode()
                if "hash-url.txt" in entry["files"]
                else None
            )
            line = pki_commands.certificate_line(kind, name, entry, hash_url)
            data = {"name": name, "generation": entry["generation"], "hash_url": hash_url}
            config.begin()
            config.root.set_line(kind, name, line, data, secret=True, display=line)
            config.commit()
            restored = True
        if restored:
            self.sup.credentials_changed()

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
        if self.sup.platform == "asr9000" and card is None and not boot and not wait_all:
            raise CommandFailure(
                "on ASR 9000 CMP runs for one VSM: chassis exec --card SLOT 'cmp ...'"
            )
        if card is not None:
            vsm = self.sup.cards.cards.get(card)
            if (
                self.sup.platform != "asr9000"
                or vsm is None
                or vsm.type != "vsm"
                or not vsm.in_service
            ):
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
        reuse = self.sup.engine.config.root.get("cmp-cert-store")
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
                key_pem = await self.sup.workers.run(keygen.generate_rsa, int(args["modulus"]))
            except cred.CredentialError as exc:
                raise CommandFailure(str(exc)) from None
        hash_line = self.sup.engine.config.root.get("cmp-hash-algorithm")
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
            tx = Transaction(enrollment, protection, rand=os.urandom, now=self.sup.wall.datetime)
            first = tx.start()
        except Exception as exc:  # a subject the codec cannot encode, say
            raise CommandFailure(f"cannot build the {kind} request: {exc}") from None
        out = Outstanding(
            kind, name, ca, args["url"], self.sup.wall.datetime().isoformat(timespec="seconds")
        )
        out.key_pem = key_pem.decode()
        out.card = card
        task = out.task = self.sup._spawn(self._cmp_transaction(tx, out, first))
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
            self.sup.run.write_json(self.sup.run.flash / "cmp-origins.json", self.origins)
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
        trap = self.sup.engine.config.root.get("cmp-cert-trap")
        auto = self.sup.engine.config.root.get("cmp-auto-fetch")
        actions = self.expiry.due(
            certs,
            self.sup.wall.datetime(),
            trap.data["hours"] if trap else None,
            {auto.data["name"]: auto.data["days"]} if auto else {},
            busy=set(self.cmp.outstanding) | self._updating,
        )
        for action in actions:
            if action.kind == "trap":
                self.expiry.trapped(action)  # marked first: at most once, even across a restart
                self._save_marks()
                self.sup._spawn(self._send_traps(action))
            else:
                self._updating.add(action.name)
                self.sup._spawn(self._auto_update(action, auto.data["ca"]))

    async def _send_traps(self, action) -> None:
        from supervisor.snmp import Target, send_expiry_trap

        hours = int((action.not_after - self.sup.wall.datetime()).total_seconds() // 3600)
        for line in self.sup.engine.config.root.all("snmp-target"):
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
            delay = self.expiry.update_failed(action, self.sup.wall.datetime())
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
        self.sup.run.write_json(self.sup.run.flash / "expiry-marks.json", self.expiry.marks)

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
                    entry["transaction"], rand=os.urandom, now=self.sup.wall.datetime
                )
            except Exception as exc:
                log.error("cannot resume the CMP request for %s: %s", out.cert_name, exc)
                self.cmp.clear(out.cert_name)
                continue
            log.info("resuming the CMP %s request for certificate %s", out.kind, out.cert_name)
            out.task = self.sup._spawn(self._cmp_transaction(tx, out, None))

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
        line = pki_commands.certificate_line("certificate", name, entry, None)
        config = self.sup.engine.config
        config.begin()
        self.sup.engine.config.root.set_line(
            "certificate",
            name,
            line,
            {"name": name, "generation": entry["generation"]},
            secret=True,
            display=line,
        )
        config.commit()
        self.sup.credentials_changed()

    def _valid_certificate(self, name: str) -> bool:
        from supervisor.pki import credentials as cred

        if ("certificate", name) not in self.pki.store.entries("certificate"):
            return False
        cert = cred.load_certificate(self.pki.store.read("certificate", name, "cert.pem"), "pem")
        return cred.validity_warning(cert, self.sup.wall.datetime()) is None

    def auto_fetch(self) -> None:
        """`cmp auto-fetch`: each VSM holding an older version fetches again by itself."""
        line = self.sup.engine.config.root.get("cmp-auto-fetch")
        if line is None:
            return
        name, ca = line.data["name"], line.data["ca"]
        entry = self.pki.store.entries("certificate").get(("certificate", name))
        if entry is None:
            return
        for slot, card in self.sup.cards.cards.items():
            held = self.vsm_fetch.get(slot)
            if (
                card.type == "vsm"
                and card.in_service
                and held
                and held["generation"] != entry["generation"]
            ):
                task = asyncio.create_task(self._vsm_fetch(slot, name, ca))
                self.sup.background.add(task)
                task.add_done_callback(self.sup.background.discard)

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
        if self.sup.platform != "asr9000":
            raise CommandFailure(
                "cmp fetch is for ASR 9000 VSMs; on ASR 5500 certificates are pushed to every DPC"
            )
        if card is None:
            raise CommandFailure(
                "cmp fetch runs for one VSM: chassis exec --card SLOT 'cmp fetch ...'"
            )
        slot = self.sup.cards.cards.get(card)
        if slot is None or slot.type != "vsm" or not slot.in_service:
            raise CommandFailure(f"card {card} is not a VSM in service")
        self.fetch_bundle(card, {"name": name, "ca": ca})  # fail here, clearly, if absent
        held = await self._vsm_fetch(card, name, ca)
        return f"Info: VSM {card} fetched certificate {name} (version {held['generation']}) and CA root {ca}"

    async def _vsm_fetch(self, slot: int, name: str, ca: str) -> dict:
        try:
            summary = await self.sup.pending.call(
                self.sup.ctl,
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
            info = cred.describe(cert, self.sup.wall.datetime(), n)
            cards = {}
            for slot in self.sup.packet_slots:
                if self.sup.platform == "asr5500":
                    held = self.sup.fanout.holds(slot, f"{k}/{n}")
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
