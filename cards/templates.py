"""Can this card serve each crypto template and crypto map with certificates? (sans-IO)

A template that authenticates the gateway with a certificate needs that certificate with its
private key, and its CA certificates, on the card. ASR 9000 VSMs hold them only after `cmp
fetch`: until then such a template is refused, and the reason is logged and reported to the
supervisor. The IKE engine asks the same question before it answers an IKE_SA_INIT.
"""

from __future__ import annotations

from cards.credentials import Credentials, NoCredentials

READY = "ready"


def readiness(config: dict, credentials: Credentials) -> dict[str, str]:
    """`context/template` and `context/crypto-map/map` -> "ready" or "refusing: <why>"."""
    out = {}
    for ctx_name, ctx in sorted(config.get("context", {}).items()):
        for name, tmpl in sorted(ctx.get("crypto-template", {}).items()):
            out[f"{ctx_name}/{name}"] = _check(tmpl, credentials)
        for name, cmap in sorted(ctx.get("crypto-map", {}).items()):
            out[map_key(ctx_name, name)] = _check(cmap, credentials)
    return out


def map_key(context: str, name: str) -> str:
    return f"{context}/crypto-map/{name}"


def _check(tmpl: dict, credentials: Credentials) -> str:
    if tmpl.get("authentication", {}).get("local") != "certificate":
        return "refusing: only `authentication local certificate` is implemented"
    cert = tmpl.get("certificate")
    if not cert:
        return "refusing: certificate authentication without `certificate name`"
    try:
        credentials.require(cert)
        for ca in tmpl.get("ca-certificate-list", []):
            credentials.certificate("ca-certificate", ca)
    except NoCredentials as exc:
        return f"refusing certificate-based IKE: {exc}"
    return READY
