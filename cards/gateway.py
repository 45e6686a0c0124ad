"""The card's gateway: one IKEv2 endpoint per bound service or crypto map.

The configuration stream names the services (`wsg-service ... bind address A port P
crypto-template T`), the crypto maps (`crypto map M ikev2-ipv4`, with a peer and a bind
address), the templates, their child-SA payloads and the transform sets; the credential
stream (or `cmp fetch`) brings the certificate, its key, the intermediates and the CA
certificates. From those this module builds each endpoint's IkeConfig. A template or map the
card cannot serve (cards/templates.py says why) gets no endpoint: its datagrams are dropped
and counted. The supervisor names the crypto maps this card initiates (one card per map);
the gateway keeps an IKE SA up to each of their peers, initiating again REINITIATE_S after
one fails or goes. Sans-IO: the runner feeds datagrams and timers and sends what comes out.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509

from cards import templates
from cards.credentials import Credentials
from cards.crls import CrlStore
from cards.dataplane import DataPlane
from cards.ike import config as ikecfg
from cards.ike.const import DhGroup, Encr, Integ, Prf, TsType
from cards.ike.engine import Endpoint
from cards.ike.events import IkeRekeyed
from cards.pki.revocation import Policy
from cards.pools import AddressPool, Pools
from cards.spi import make_spi

log = logging.getLogger("gateway")

ENCRYPTION = {
    "aes-cbc-128": (Encr.AES_CBC, 128),
    "aes-cbc-256": (Encr.AES_CBC, 256),
    "aes-gcm-128": (Encr.AES_GCM_16, 128),
    "aes-gcm-256": (Encr.AES_GCM_16, 256),
}
HMAC = {
    "sha2-256-128": Integ.HMAC_SHA2_256_128,
    "sha2-384-192": Integ.HMAC_SHA2_384_192,
    "sha2-512-256": Integ.HMAC_SHA2_512_256,
}
PRF = {"sha2-256": Prf.HMAC_SHA2_256, "sha2-384": Prf.HMAC_SHA2_384, "sha2-512": Prf.HMAC_SHA2_512}
GROUP = {
    "14": DhGroup.MODP_2048,
    "19": DhGroup.ECP_256,
    "20": DhGroup.ECP_384,
    "31": DhGroup.CURVE25519,
}
ANY_TS = (ikecfg.any_ts(TsType.IPV4_ADDR_RANGE), ikecfg.any_ts(TsType.IPV6_ADDR_RANGE))
FAMILY_TS = {"ipv4": ANY_TS[:1], "ipv6": ANY_TS[1:], "any": ANY_TS}
REINITIATE_S = 5.0  # a crypto map's IKE SA is tried again this long after it failed or went
# StarOS's own defaults (AES-CBC-128, group 2, SHA1) are too weak for this engine: unset fields
# fall back to AES-CBC-128, group 14, HMAC-SHA2-256-128 and PRF-SHA2-256 instead.
DEFAULT_TSET = {
    "encryption": "aes-cbc-128",
    "group": "14",
    "hmac": "sha2-256-128",
    "prf": "sha2-256",
}


def proposal(tset: dict) -> ikecfg.IkeProposal:
    t = {**DEFAULT_TSET, **tset}
    encr, bits = ENCRYPTION[t["encryption"]]
    integ = Integ.NONE if encr == Encr.AES_GCM_16 else HMAC[t["hmac"]]
    return ikecfg.IkeProposal(encr, bits, PRF[t["prf"]], integ, GROUP[str(t["group"])])


def esp_proposal(tset: dict) -> ikecfg.ChildProposal:
    """An `ipsec transform-set`: the IKE SA's defaults, no PRF, no PFS unless `group` says."""
    t = {**DEFAULT_TSET, "group": "none", **tset}
    encr, bits = ENCRYPTION[t["encryption"]]
    integ = Integ.NONE if encr == Encr.AES_GCM_16 else HMAC[t["hmac"]]
    dh = 0 if t["group"] == "none" else GROUP[str(t["group"])]
    return ikecfg.ChildProposal(encr, bits, integ, dh)


def selectors(lines: dict, family: str) -> tuple:
    """A payload's `tsi`/`tsr` lines as traffic selectors; none: all of its family."""
    if not lines:
        return FAMILY_TS[family]
    out = []
    for ts in lines.values():
        start, end = ipaddress.ip_address(ts["start"]), ipaddress.ip_address(ts["end"])
        kind = TsType.IPV4_ADDR_RANGE if start.version == 4 else TsType.IPV6_ADDR_RANGE
        out.append(ikecfg.TrafficSelector(kind, int(ts["protocol"]), *ts["ports"], start, end))
    return tuple(out)


def child_policies(block: dict, ctx: dict, initiator: bool) -> tuple[ikecfg.ChildPolicy, ...]:
    """The payloads of a template (we respond: TSi is the peer's) or of a crypto map (we
    initiate: TSi is ours), in configuration order; none: one payload for any IPv4/IPv6."""
    sets = ctx.get("ipsec-transform-set", {})
    out = []
    for name, pl in (block.get("payload") or {}).items():
        tsi, tsr = (selectors(pl.get(side), pl.get("family", "any")) for side in ("tsi", "tsr"))
        names = pl.get("ipsec-transform-set-list") or []
        out.append(
            ikecfg.ChildPolicy(
                name,
                tuple(esp_proposal(sets.get(n, {})) for n in names)
                or ikecfg.DEFAULT_CHILD_PROPOSALS,
                ts_local=tsi if initiator else tsr,
                ts_remote=tsr if initiator else tsi,
                lifetime_s=int(pl.get("lifetime", 86400)),
                rekey=bool(pl.get("rekey")),
            )
        )
    return tuple(out) or (ikecfg.ChildPolicy(ts_local=ANY_TS, ts_remote=ANY_TS),)


def settings(block: dict, ctx: dict, initiator: bool) -> dict:
    """IkeConfig fields from a crypto template or map (all but the credentials)."""
    sets = ctx.get("ikesa-transform-set", {})
    names = block.get("ikesa-transform-set-list") or []
    childsa, dpd = block.get("max-childsa") or {}, block.get("dpd") or {}
    return {
        "proposals": tuple(proposal(sets.get(n, {})) for n in names) or ikecfg.DEFAULT_PROPOSALS,
        "retransmit_timeout_ms": int(block.get("ikesa-retransmission-timeout", 500)),
        "max_retransmissions": int(block.get("ikesa-max-retransmissions", 5)),
        "setup_timeout_s": float(block.get("ikesa-setup-timer", 30)),
        "children": child_policies(block, ctx, initiator),
        "max_children": int(childsa.get("count", 2)),  # StarOS's default max-childsa
        "overload_action": childsa.get("action", "ignore"),
        "ike_lifetime_s": int(sets.get(names[0], {}).get("lifetime", 86400)) if names else 86400,
        "ike_rekey": "ikesa-rekey" in block,
        "dpd_interval_s": float(dpd["interval"]) if dpd else None,
        "dpd_retry_s": float(dpd.get("retry-interval", 2)),
        "dpd_max_retries": int(dpd.get("maximum-retry", 3)),
        "hash_and_url": "allow-cert-enc" in block,
        "revocation": revocation_policy(block),
    }


def revocation_policy(block: dict) -> Policy | None:
    """`ocsp [nonce]`, `ocsp responder-address URL`, `ca-crl list ...` and the check's
    timer, from a crypto template or map (None: no revocation checking)."""
    ocsp, crls = block.get("ocsp"), tuple(block.get("ca-crl-list") or ())
    if not ocsp and not crls:
        return None
    return Policy(
        ocsp=bool(ocsp),
        nonce=bool(ocsp and ocsp.get("nonce")),
        responder=block.get("ocsp-responder-address"),
        crls=crls,
        timeout_s=float(block.get("revocation-setup-timer", 2)),
    )


def address_pools(names: list[str], ctx: dict, share: dict) -> Pools | None:
    """The service's `ip address pool name` list as this card's share of each pool."""
    pools = []
    for name in names:
        v4, v6 = ctx.get("ip-pool", {}).get(name), ctx.get("ipv6-pool", {}).get(name)
        network = f"{v4['address']}/{v4['mask']}" if v4 else v6["prefix"] if v6 else None
        if network is not None:
            pools.append(AddressPool(name, network, share["index"], share["of"]))
    return Pools(pools) if pools else None


def sink_settings(block: dict) -> tuple[bool, dict]:
    """(echo, {payload: (lifetime bytes, lifetime packets)}) of a template or map."""
    limits = {
        name: (pl.get("lifetime-bytes"), pl.get("lifetime-packets"))
        for name, pl in (block.get("payload") or {}).items()
    }
    return block.get("ipsec-sink") == "echo", limits


@dataclass
class MapState:
    """A crypto map this card serves: its peer, and the IKE SA it keeps up when it owns it."""

    name: str  # context/crypto-map/NAME
    peer: tuple[str, int]
    sa: object = None  # the IKE SA initiated last
    retry_at: float = 0.0


class Gateway:
    def __init__(
        self, slot: int, rand: Callable[[int], bytes], wall_clock, cookie_secret: bytes
    ) -> None:
        self.slot, self.rand, self.wall_clock = slot, rand, wall_clock
        self.cookie_secret = cookie_secret
        self.endpoints: dict[tuple[str, int], Endpoint] = {}
        self._built: dict[tuple[str, int], str] = {}  # what each endpoint was built from
        self.maps: dict[tuple[str, int], MapState] = {}  # by the map's local address
        self.owned: set[str] = set()  # crypto maps the supervisor asked this card to initiate
        self.dp = DataPlane(rand)  # ESP of every child of every endpoint
        self.sinks: dict[tuple[str, int], tuple[bool, dict]] = {}  # local -> (echo, limits)
        self.crls = CrlStore()  # the card's CRLs: the runner puts in its own, kept up to date
        self.checkpointing = False  # a standby card holds checkpoints of our SAs
        self.to_sync: list = []  # (local, our SPI) of SAs taken over, until the NPU steers here

    def configure(self, tree: dict, credentials: Credentials, share: dict | None = None) -> None:
        """(Re)build the endpoints whose service, map, template or credentials changed.
        ``share`` is this card's share of the IP pools ({"index": k, "of": n})."""
        share = share or {"index": 0, "of": 1}
        ready = templates.readiness(tree, credentials)
        wanted: dict[tuple[str, int], str] = {}
        maps: dict[tuple[str, int], MapState] = {}
        for ctx_name, ctx in tree.get("context", {}).items():
            blocks = []  # (local address, name, template or map, we initiate)
            for svc in ctx.get("wsg-service", {}).values():
                bind = svc.get("bind")
                tmpl = bind and ctx.get("crypto-template", {}).get(bind["template"])
                if tmpl:
                    pools = {"pools": list((svc.get("ip-address-pool") or {}).values())}
                    blocks.append(
                        (bind, f"{ctx_name}/{bind['template']}", {**tmpl, **pools}, False)
                    )
            for name, cmap in ctx.get("crypto-map", {}).items():
                if cmap.get("bind") and cmap.get("peer"):
                    blocks.append((cmap["bind"], templates.map_key(ctx_name, name), cmap, True))
            for bind, name, block, initiator in blocks:
                if ready.get(name) != templates.READY:
                    continue
                local = (bind["address"], int(bind["port"]))
                fingerprint = json.dumps(
                    [block, ctx.get("ikesa-transform-set", {}), ctx.get("ipsec-transform-set", {}),
                     credentials.summary(), ctx.get("ip-pool"), ctx.get("ipv6-pool"), share],
                    sort_keys=True,
                    default=str,
                )  # fmt: skip
                wanted[local] = fingerprint
                if initiator:
                    peer = (block["peer"]["address"], int(block["peer"]["port"]))
                    old = self.maps.get(local)
                    keep = old and old.name == name and old.peer == peer
                    maps[local] = old if keep else MapState(name, peer)
                self.sinks[local] = sink_settings(block)
                if self._built.get(local) != fingerprint:
                    config = self._config(block, ctx, credentials, initiator, share)
                    what = f"crypto map {name}" if initiator else f"crypto template {name}"
                    if local in self.endpoints:
                        # A renewed certificate or an edited template: the SAs up stay up
                        # (a real SeGW does not drop its tunnels on `kur`); what they do next
                        # follows the new configuration.
                        self.endpoints[local].reconfigure(config)
                        log.info("serving %s:%d with %s, reconfigured", *local, what)
                    else:
                        self.endpoints[local] = self._endpoint(local, config)
                        log.info("serving %s:%d with %s", *local, what)
                    self._built[local] = fingerprint
        for local in set(self.endpoints) - set(wanted):
            del self.endpoints[local], self._built[local]
            self.dp.forget(local)
            log.info("no longer serving %s:%d", *local)
        self.maps = maps

    def _config(self, block: dict, ctx: dict, creds: Credentials, initiator: bool, share):
        cert_name = block["certificate"]
        own = creds.require(cert_name)
        chain = (
            x509.load_pem_x509_certificates(own["chain_pem"].encode())
            if own.get("chain_pem")
            else []
        )
        # Intermediates to send come from the CA's answer (CMP) and the configured CA
        # certificates; chain_to_send keeps those that link the gateway to the peer's anchor.
        cas = [creds.certificate("ca-certificate", n) for n in creds.names("ca-certificate")]
        intermediates = tuple(c for c in (*chain, *cas) if c.issuer != c.subject)
        return ikecfg.IkeConfig(
            credentials=ikecfg.Credentials(
                creds.certificate("certificate", cert_name),
                creds.private_key(cert_name),
                intermediates,
            ),
            trust_anchors=tuple(
                creds.certificate("ca-certificate", ca)
                for ca in block.get("ca-certificate-list", [])
            ),
            **settings(block, ctx, initiator),
            own_cert_url=own.get("hash_url") if "allow-cert-enc" in block else None,
            crl_store=self.crls,
            addresses=address_pools(block.get("pools", []), ctx, share),
        )

    def _endpoint(self, local, config: ikecfg.IkeConfig) -> Endpoint:
        endpoint = self._new_endpoint(local, config)
        if self.checkpointing:
            endpoint.track_changes()
        return endpoint

    def _new_endpoint(self, local, config: ikecfg.IkeConfig) -> Endpoint:
        return Endpoint(
            config,
            rand=self.rand,
            wall_clock=self.wall_clock,
            spi_alloc=lambda: make_spi(self.slot, self.rand(8)),  # the NPU steers by these bits
            esp_spi_alloc=lambda: make_spi(self.slot, self.rand(4)),  # ESP too (top byte)
            cookie_secret=self.cookie_secret,
            local=local,
        )

    def own_maps(self, names, now: float) -> list:
        """The supervisor's word on which crypto maps this card initiates. A map taken away
        has its IKE SA deleted (another card initiates it now)."""
        self.owned = set(names)
        outs: list = []
        for local, state in self.maps.items():
            if state.name not in self.owned and self._alive(local, state):
                outs += self._track(local, self.endpoints[local].delete(state.sa.my_spi, now))
                state.sa = None
        return outs

    def _alive(self, local, state: MapState) -> bool:
        sa = state.sa
        return sa is not None and self.endpoints[local].sas.get(sa.my_spi) is sa

    def _to_initiate(self):
        for local, state in self.maps.items():
            if state.name in self.owned and not self._alive(local, state):
                yield local, state

    def receive(self, local, remote, data: bytes, now: float) -> list | None:
        local, remote = (local[0], int(local[1])), (remote[0], int(remote[1]))
        key = local
        if key not in self.endpoints and local[1] == 4500:  # the NAT-T port of a service on 500
            key = (local[0], 500)
        endpoint = self.endpoints.get(key)
        if endpoint is None:
            return None
        if 500 not in (local[1], remote[1]) and len(data) >= 8 and data[:4] != bytes(4):
            # ESP-in-UDP (RFC 3948: IKE there carries the non-ESP marker)
            return self.dp.inbound(local, remote, data) + self._lifetimes(now)
        return self._track(key, endpoint.receive(data, remote, local, now))

    def resolve(self, my_spi: bytes, url: str, data: bytes | None, now: float) -> list:
        """A certificate fetched for Hash and URL (None: the fetch failed)."""
        for local, endpoint in self.endpoints.items():
            if my_spi in endpoint.sas:
                return self._track(local, endpoint.resolve(my_spi, url, data, now))
        return []

    def revocation_answer(self, my_spi: bytes, kind: str, url: str, body: bytes | None,
                          error: str | None, now: float) -> list:  # fmt: skip
        """An OCSP answer or a CRL fetch result for an IKE_AUTH waiting on it."""
        for local, endpoint in self.endpoints.items():
            if my_spi in endpoint.sas:
                return self._track(
                    local, endpoint.revocation_answer(my_spi, kind, url, body, error, now)
                )
        return []

    # ------------------------------------------------------------------ session recovery
    def enable_checkpoints(self) -> None:
        """This card has a standby: its engines record what each step changes."""
        self.checkpointing = True
        for endpoint in self.endpoints.values():
            endpoint.track_changes()

    def disable_checkpoints(self) -> None:
        self.checkpointing = False
        for endpoint in self.endpoints.values():
            endpoint.track_changes(False)

    def checkpoint_batch(self, outbox, full: bool = False) -> dict | None:
        """The SAs changed since the last batch (``full``: all of them) for the standby."""
        seq = self.dp.take_seq()
        if full:
            return outbox.full(self.endpoints, seq)
        return outbox.collect(self.endpoints, seq)

    def release(self) -> int:
        """`card migrate`: another card serves our SAs now. Forget them without a DELETE
        (the peers keep their tunnels, at the other card); returns how many went."""
        count = 0
        for local, endpoint in list(self.endpoints.items()):
            count += len(endpoint.sas)
            if endpoint.config.addresses is not None:  # the inner addresses go with them
                for sa in endpoint.sas.values():
                    for address in sa.assigned:
                        endpoint.config.addresses.release(address)
            self.dp.forget(local)
            self.endpoints[local] = self._endpoint(local, endpoint.config)
        for state in self.maps.values():
            state.sa = None
        return count

    def take_over(self, holding, now: float, limit: int | None = None) -> int:
        """Serve the SAs a failed card checkpointed to this one: adopt them into the
        endpoints and rebuild their ESP state; returns how many. Their Message ID syncs wait
        for ``start_syncs``: sent before the NPU steers the peers' answers here, they would
        be lost (and an AES-GCM peer cannot answer a Message ID 0 twice)."""
        adopted = holding.take_over(self.endpoints, now, limit)
        seq_from = holding.esp_start(c for _, sa in adopted for c in sa.children)
        for local, sa in adopted:
            endpoint = self.endpoints[local]
            echo, limits = self.sinks.get(local, (False, {}))
            self.dp.adopt(endpoint, sa, echo=echo, limits=limits, seq_from=seq_from)
            self.to_sync.append((local, sa.my_spi))
        return len(adopted)

    def start_syncs(self, now: float, limit: int | None = None) -> list:
        """The NPU steers the adopted SAs here now: agree on Message IDs with each peer that
        supports it (RFC 6311) before anything else is sent to it; up to ``limit`` of them."""
        cut = len(self.to_sync) if limit is None else limit
        outs, syncs, self.to_sync = [], self.to_sync[:cut], self.to_sync[cut:]
        for local, spi in syncs:
            endpoint = self.endpoints.get(local)
            if endpoint is not None:
                outs += self._track(local, endpoint.sync_message_ids(spi, now))
        return outs

    # ------------------------------------------------------------------ the data plane
    def _track(self, local, outs: list) -> list:
        """Keep the data plane in step with the children the engine made, moved or deleted."""
        echo, limits = self.sinks.get(local, (False, {}))
        self.dp.track(self.endpoints[local], outs, echo=echo, limits=limits)
        for o in outs:
            if isinstance(o, IkeRekeyed):
                self.dp.rehome((o.spi_i, o.spi_r), o.new_spi_i if o.initiator else o.new_spi_r)
        return outs

    def _lifetimes(self, now: float) -> list:
        """Children past 90% of their byte or packet lifetime: the engine rekeys them."""
        outs: list = []
        for ike_spi, spi in self.dp.due_rekeys():
            for local, endpoint in self.endpoints.items():
                if ike_spi in endpoint.sas:
                    outs += self._track(local, endpoint.rekey_child(ike_spi, spi, now))
        return outs

    def inject(self, spi: bytes, count: int, size: int, now: float) -> list:
        """``count`` inner UDP packets toward the peer through the child ``spi`` (inbound)."""
        if spi not in self.dp.tunnels:
            raise KeyError(f"no child SA with inbound SPI {spi.hex()} on this card")
        return self.dp.inject(spi, count, size) + self._lifetimes(now)

    def next_timer(self) -> float | None:
        times = [t for t in (e.get_timer() for e in self.endpoints.values()) if t is not None]
        times += [state.retry_at for _, state in self._to_initiate()]
        return min(times, default=None)

    def handle_timer(self, now: float) -> list:
        outs: list = []
        for local, endpoint in self.endpoints.items():
            outs += self._track(local, endpoint.handle_timer(now))
        for local, state in list(self._to_initiate()):
            if state.retry_at <= now:
                endpoint = self.endpoints[local]
                before = set(endpoint.sas)
                outs += self._track(local, endpoint.initiate(state.peer, now, local))
                new = [endpoint.sas[s] for s in set(endpoint.sas) - before]
                state.sa = new[0] if new else None
                state.retry_at = now + REINITIATE_S
                log.info("crypto map %s: initiating to %s:%d", state.name, *state.peer)
        return outs

    def sa_table(self, limit: int = 10000) -> list[dict]:
        """What `show crypto ikev2-ikesa security-associations` prints for this card."""
        rows = []
        for endpoint in self.endpoints.values():
            for sa in list(endpoint.sas.values())[: max(0, limit - len(rows))]:
                rows.append(
                    {
                        "local": f"{sa.local[0]}:{sa.local[1]}",
                        "remote": f"{sa.peer[0]}:{sa.peer[1]}",
                        "spi_i": sa.spi_i.hex(),
                        "spi_r": sa.spi_r.hex() if sa.spi_r else "",
                        "state": sa.state.name,
                        "role": "initiator" if sa.initiator else "responder",
                        "peer_id": sa.peer_id,
                        "suite": str(sa.proposal) if getattr(sa, "proposal", None) else "",
                        "children": len(getattr(sa, "children", {})),
                        "address": ", ".join(sa.assigned or sa.virtual_ips),  # CP inner address
                    }
                )
        return rows

    def key_table(self) -> list[dict]:
        """The keys of every IKE SA that has them and of its CHILD_SAs, for `chassis capture
        --keys` only (the "ike.keys" RPC): never logged, never in a show command."""
        rows = []
        for endpoint in self.endpoints.values():
            for sa in endpoint.sas.values():
                p, k = getattr(sa, "proposal", None), getattr(sa, "keys", None)
                if p is None or k is None:
                    continue  # IKE_SA_INIT not done: nothing is encrypted yet
                children = [
                    {"our_spi": c.our_spi.hex(), "their_spi": c.their_spi.hex(),
                     "encr": int(c.suite.encr), "key_bits": c.suite.key_bits,
                     "integ": int(c.suite.integ), "inbound": [x.hex() for x in c.inbound],
                     "outbound": [x.hex() for x in c.outbound]}
                    for c in sa.children.values()
                ]  # fmt: skip
                rows.append(
                    {"local": list(sa.local), "peer": list(sa.peer), "spi_i": sa.spi_i.hex(),
                     "spi_r": sa.spi_r.hex(), "encr": int(p.encr), "key_bits": p.key_bits,
                     "integ": int(p.integ), "sk_ei": k.sk_ei.hex(), "sk_er": k.sk_er.hex(),
                     "sk_ai": k.sk_ai.hex(), "sk_ar": k.sk_ar.hex(), "children": children}
                )  # fmt: skip
        return rows

    def child_table(self, now: float, limit: int = 10000) -> list[dict]:
        """What `show crypto ipsec security-associations` prints for this card: every
        CHILD_SA with its SPIs, selectors, transforms, lifetime and data-plane counters."""
        from cards.ike.child import describe_ts

        rows = []
        for endpoint in self.endpoints.values():
            for sa in endpoint.sas.values():
                for c in sa.children.values():
                    if len(rows) >= limit:
                        return rows
                    rows.append(
                        {
                            "ike_spi": f"{sa.spi_i.hex()}_i {sa.spi_r.hex()}_r",
                            "peer": f"{sa.peer[0]}:{sa.peer[1]}",
                            "peer_id": sa.peer_id,
                            "payload": c.policy,
                            "spi_in": c.our_spi.hex(),
                            "spi_out": c.their_spi.hex(),
                            "suite": str(c.suite),
                            "tsi": describe_ts(c.tsi),
                            "tsr": describe_ts(c.tsr),
                            "lifetime_s": round(c.expire_at - now) if c.expire_at else None,
                            "rekey_in_s": round(c.rekey_at - now) if c.rekey_at else None,
                            **self.esp_counters(c.our_spi),
                        }
                    )
        return rows

    def esp_counters(self, spi: bytes) -> dict:
        """The data plane's counters of one child."""
        return self.dp.counters(spi)

    def counts(self) -> tuple[int, int]:
        """(established IKE SAs, their CHILD_SAs) for `show card table` (walks every SA)."""
        from cards.ike.sa import State

        sas = children = 0
        for endpoint in self.endpoints.values():
            for sa in endpoint.sas.values():
                if sa.state == State.ESTABLISHED:
                    sas, children = sas + 1, children + len(sa.children)
        return sas, children
