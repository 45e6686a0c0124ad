"""The card's gateway: one IKEv2 endpoint per bound service, built from the configuration.

The configuration stream names the services (`wsg-service ... bind address A port P
crypto-template T`), the templates and their transform sets; the credential stream (or
`cmp fetch`) brings the certificate, its key, the intermediates and the CA certificates.
From those this module builds each endpoint's IkeConfig. A template the card cannot serve
(cards/templates.py says why) gets no endpoint: its datagrams are dropped and counted.
Sans-IO: the runner feeds datagrams and timers and sends what comes out.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from cryptography import x509

from cards import templates
from cards.credentials import Credentials
from cards.ike import config as ikecfg
from cards.ike.const import DhGroup, Encr, Integ, Prf, TsType
from cards.ike.engine import Endpoint
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


class Gateway:
    def __init__(
        self, slot: int, rand: Callable[[int], bytes], wall_clock, cookie_secret: bytes
    ) -> None:
        self.slot, self.rand, self.wall_clock, self.cookie_secret = (
            slot,
            rand,
            wall_clock,
            cookie_secret,
        )
        self.endpoints: dict[tuple[str, int], Endpoint] = {}
        self._built: dict[tuple[str, int], str] = {}  # what each endpoint was built from

    def configure(self, tree: dict, credentials: Credentials) -> None:
        """(Re)build the endpoints whose service, template or credentials changed."""
        ready = templates.readiness(tree, credentials)
        wanted: dict[tuple[str, int], str] = {}
        for ctx_name, ctx in tree.get("context", {}).items():
            for svc in ctx.get("wsg-service", {}).values():
                bind = svc.get("bind")
                if not bind:
                    continue
                name = f"{ctx_name}/{bind['template']}"
                tmpl = ctx.get("crypto-template", {}).get(bind["template"])
                if tmpl is None or ready.get(name) != templates.READY:
                    continue
                local = (bind["address"], int(bind["port"]))
                fingerprint = json.dumps(
                    [tmpl, ctx.get("ikesa-transform-set", {}), credentials.summary()],
                    sort_keys=True,
                    default=str,
                )
                wanted[local] = fingerprint
                if self._built.get(local) != fingerprint:
                    self.endpoints[local] = self._endpoint(local, tmpl, ctx, credentials)
                    self._built[local] = fingerprint
                    log.info("serving %s:%d with crypto template %s", *local, name)
        for local in set(self.endpoints) - set(wanted):
            del self.endpoints[local], self._built[local]
            log.info("no longer serving %s:%d", *local)

    def _endpoint(self, local, tmpl: dict, ctx: dict, creds: Credentials) -> Endpoint:
        cert_name = tmpl["certificate"]
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
        sets = ctx.get("ikesa-transform-set", {})
        names = tmpl.get("ikesa-transform-set-list") or []
        proposals = tuple(proposal(sets.get(n, {})) for n in names) or ikecfg.DEFAULT_PROPOSALS
        config = ikecfg.IkeConfig(
            credentials=ikecfg.Credentials(
                creds.certificate("certificate", cert_name),
                creds.private_key(cert_name),
                intermediates,
            ),
            trust_anchors=tuple(
                creds.certificate("ca-certificate", ca)
                for ca in tmpl.get("ca-certificate-list", [])
            ),
            proposals=proposals,
            retransmit_timeout_ms=int(tmpl.get("ikesa-retransmission-timeout", 500)),
            max_retransmissions=int(tmpl.get("ikesa-max-retransmissions", 5)),
            setup_timeout_s=float(tmpl.get("ikesa-setup-timer", 30)),
            # Until the template's child-SA payloads are configurable (#6): any IPv4 or IPv6.
            child_ts_local=ANY_TS,
            child_ts_remote=ANY_TS,
        )
        return Endpoint(
            config,
            rand=self.rand,
            wall_clock=self.wall_clock,
            spi_alloc=lambda: make_spi(self.slot, self.rand(8)),  # the NPU steers by these bits
            esp_spi_alloc=lambda: make_spi(self.slot, self.rand(4)),  # ESP too (top byte)
            cookie_secret=self.cookie_secret,
            local=local,
        )

    def receive(self, local, remote, data: bytes, now: float) -> list | None:
        endpoint = self.endpoints.get((local[0], int(local[1])))
        if endpoint is None:
            return None
        return endpoint.receive(data, (remote[0], int(remote[1])), (local[0], int(local[1])), now)

    def next_timer(self) -> float | None:
        times = [t for t in (e.get_timer() for e in self.endpoints.values()) if t is not None]
        return min(times, default=None)

    def handle_timer(self, now: float) -> list:
        outs: list = []
        for endpoint in self.endpoints.values():
            outs += endpoint.handle_timer(now)
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
                    }
                )
        return rows

    def sa_count(self) -> int:
        from cards.ike.sa import State

        return sum(
            1
            for e in self.endpoints.values()
            for sa in e.sas.values()
            if sa.state == State.ESTABLISHED
        )
