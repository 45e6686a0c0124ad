"""StarOS PKI commands (reference: "IPSec Certificates"), registered as a CLI plugin.

Global configuration:
  cmp cert-store location PATH [ key reuse ]        no cmp cert-store
  certificate name NAME { der url URL | pem { data PEM | url URL } }
      private-key pem { [ encrypted ] data PEM | url URL } [ [ cert-enc ] cert-hash-url URL ]
  ca-certificate name NAME { der url URL | pem { data PEM | url URL } }
  no certificate name NAME                          no ca-certificate name NAME
  cmp auto-fetch current-name NAME ca-root CA time DAYS
Exec:
  crypto rsa-keygen modulus {512|1024|2048|4096} id-type {fqdn id FQDN | ip id ADDRESS |
      rfc822-addr id ADDR} subject-name STRING
  cmp fetch current-cert NAME ca-root CA             (ASR 9000: for the VSM of `exec --card N`)
  show certificate [ name NAME ]    show ca-certificate [ name NAME ]    show crypto csr

A PEM typed on the command line is one quoted word: line breaks may be written `\\n` or
as spaces. Once installed, a certificate's configuration line names its copy in the
store's private directory (`pem url file:/flash/...`), never the data, so `show
configuration` shows no key material and applies unchanged as a boot configuration.
"""

from __future__ import annotations

from typing import Any

from supervisor.cli import CommandFailure, Deferred, Result, SetLine
from supervisor.cli.grammar import Grammar

NAME = "NAME(1-256)"
# The limits (4095, 8191) are checked by the handler, so the error can name them.
SOURCE = "{ der url <der_url:URL> | pem { data <pem_data:STRING(1-65535)> | url <pem_url:URL> } }"
KEY = "private-key pem { [ encrypted ]@encrypted data <key_data:STRING(1-65535)> | url <key_url:URL> }"
HELP = {
    "cmp": "Configures Certificate Management Protocol (CMPv2) settings",
    "cert-store": "Where certificates and private keys are stored",
    "location": "Storage path: /flash, /usb1 or /hd-raid[/dir]",
    "key": "Key pair handling",
    "reuse": "Keep the existing key pair when a certificate is updated",
    "certificate": "Configures a certificate of this gateway",
    "ca-certificate": "Configures a CA certificate (trust anchor)",
    "name": "Certificate name",
    "der": "DER-encoded certificate",
    "pem": "PEM-encoded data",
    "url": "Where to fetch it: /flash|/usb1|/hd-raid path, tftp, ftp, sftp or http URL",
    "data": "The PEM text as one quoted word (line breaks as \\n or spaces)",
    "private-key": "The certificate's private key",
    "encrypted": "The data is encrypted with this chassis's configuration key",
    "cert-hash-url": "URL announced for this certificate in Hash and URL encoding",
    "cert-enc": "Certificate encoding offered to IKE peers",
    "auto-fetch": "VSMs fetch the renewed certificate by themselves",
    "current-name": "Certificate name",
    "ca-root": "Name of the CA certificate of the root",
    "time": "Days before expiry to run the automatic update",
    "crypto": "Cryptographic operations",
    "rsa-keygen": "Generates an RSA key pair and a certificate request",
    "modulus": "RSA key size in bits",
    "id-type": "Type of the identity put in the request's subjectAltName",
    "fqdn": "Fully qualified domain name",
    "ip": "IP address",
    "rfc822-addr": "E-mail address",
    "id": "The identity",
    "subject-name": 'Subject, e.g. "/C=US/O=Operator/CN=segw.example.net"',
    "fetch": "Reads a certificate, its key and CA root from the management card",
    "current-cert": "Certificate name",
    "csr": "The certificate request made by crypto rsa-keygen",
}


def _pki(ctx):
    return ctx.system.pki


def certificate_line(kind: str, name: str, entry: dict, hash_url: str | None) -> str:
    line = f"{kind} name {name} pem url {entry['urls']['cert.pem']}"
    if "key.pem" in entry["urls"]:
        line += f" private-key pem url {entry['urls']['key.pem']}"
    if hash_url:
        line += f" cert-hash-url {hash_url}"
    return line


def _install(kind: str):
    def handler(args: dict, ctx: Any) -> Deferred:
        pki, name = _pki(ctx), args["name"]
        hash_url = args.get("hash_url")
        if isinstance(hash_url, list):  # the grammar has it in two alternatives
            hash_url = hash_url[0] if hash_url else None

        async def work():
            return await pki.prepare_certificate(
                name,
                kind,
                der_url=args.get("der_url"),
                pem_data=args.get("pem_data"),
                pem_url=args.get("pem_url"),
                key_data=args.get("key_data"),
                key_encrypted=bool(args.get("encrypted")),
                key_url=args.get("key_url"),
            )

        def apply(prepared) -> Result:
            files = dict(prepared.files)
            if hash_url:  # announced in IKE_AUTH as Hash and URL: it travels with the cert
                files["hash-url.txt"] = hash_url.encode()
            entry = pki.store.install(kind, name, files)
            line = certificate_line(kind, name, entry, hash_url)
            data = {"name": name, "generation": entry["generation"], "hash_url": hash_url}
            ctx.block.set_line(kind, name, line, data, secret=True, display=line)
            ctx.later(ctx.system.credentials_changed)
            return Result("\n".join(prepared.warnings))

        return Deferred(work, apply)

    def remove(args: dict, ctx: Any) -> Result | None:
        name = args["name"]
        removed = ctx.block.remove(kind, name)
        if _pki(ctx).store.remove(kind, name) or removed:
            ctx.later(ctx.system.credentials_changed)
            return None
        return Result(f"Warning: {kind} {name} is not configured")

    return handler, remove


def _cert_store(args: dict, ctx: Any) -> None:
    location = args["path"].rstrip("/")
    # Rendered first, so that a saved configuration moves the store before filling it.
    SetLine(
        "cmp-cert-store",
        data=lambda a: {"location": location, "key_reuse": "key" in a},
        first=True,
    )(args, ctx)
    _relocate(ctx, location)


def _no_cert_store(args: dict, ctx: Any) -> None:
    from supervisor.pki.service import DEFAULT_LOCATION

    ctx.block.remove("cmp-cert-store")
    _relocate(ctx, DEFAULT_LOCATION)


def _relocate(ctx: Any, location: str) -> None:
    from supervisor.pki.credentials import CredentialError

    store = _pki(ctx).store
    try:
        store.relocate(location)
    except CredentialError as exc:
        raise CommandFailure(str(exc)) from None
    # The configuration names each certificate's stored copy: follow it to the new place.
    for (kind, name), entry in store.entries().items():
        line = ctx.engine.config.root.get(kind, name)
        if line is not None:
            text = certificate_line(kind, name, entry, (line.data or {}).get("hash_url"))
            data = {**(line.data or {}), "generation": entry["generation"]}
            ctx.engine.config.root.set_line(kind, name, text, data, secret=True, display=text)
    ctx.later(ctx.system.credentials_changed)


def _rsa_keygen(args: dict, ctx: Any) -> Deferred:
    from supervisor.pki import keygen

    pki, modulus = _pki(ctx), int(args["modulus"])
    id_type = args["id_type"]
    id_value = args.get("fqdn") or args.get("ip") or args.get("email")

    async def work():
        try:
            keygen.parse_subject(args["subject"])  # a bad subject fails before the slow part
            key = await pki.workers.run(keygen.generate_rsa, modulus)
            csr = await pki.workers.run(keygen.build_csr, key, args["subject"], id_type, id_value)
        except keygen.CredentialError as exc:
            raise CommandFailure(str(exc)) from None
        return key, csr

    def apply(made) -> Result:
        key, csr = made
        meta = f'{{"id_type": "{id_type}", "id": "{id_value}", "modulus": {modulus}}}'.encode()
        pki.store.install("csr", "rsa-keygen", {"key.pem": key, "csr.pem": csr, "id.json": meta})
        lines = [w for w in [keygen.weak_warning(modulus)] if w]
        lines.append(
            f"Info: RSA-{modulus} key pair and certificate request generated; "
            "`show crypto csr` prints the request"
        )
        return Result("\n".join(lines))

    return Deferred(work, apply)


def _show_csr(args: dict, ctx: Any) -> Result:
    import json

    store = _pki(ctx).store
    if ("csr", "rsa-keygen") not in store.entries("csr"):
        raise CommandFailure("no certificate request; generate one with crypto rsa-keygen")
    pem = store.read("csr", "rsa-keygen", "csr.pem").decode()
    meta = json.loads(store.read("csr", "rsa-keygen", "id.json"))
    key_url = store.local_url("csr", "rsa-keygen", "key.pem")
    data = {**meta, "csr_pem": pem, "private_key_url": key_url}
    head = f"Certificate request (RSA-{meta['modulus']}, id-type {meta['id_type']} id {meta['id']})"
    return Result(f"{head}\nPrivate key: {key_url}\n{pem.rstrip()}", data)


def _show(kind: str):
    def handler(args: dict, ctx: Any) -> Result:
        rows = ctx.system.credential_report(kind, args.get("name"))
        if args.get("name") and not rows:
            raise CommandFailure(f"{kind} {args['name']} is not configured")
        out = []
        for r in rows:
            out += [
                f"{kind.replace('-', ' ').title()} name: {r['name']}",
                f"  Subject      : {r['subject']}",
                f"  Issuer       : {r['issuer']}",
                f"  Serial       : {r['serial']}",
                f"  Valid from   : {r['not_before']}",
                f"  Valid until  : {r['not_after']}",
                f"  Key          : {r['key']}",
                f"  SHA-256      : {r['sha256']}",
                f"  Version      : {r['generation']}",
                f"  Stored at    : {r['url']}",
            ]
            if r.get("warning"):
                out.append(f"  {r['warning']}")
            cards = ", ".join(f"{slot}: {held}" for slot, held in r["cards"].items()) or "none"
            out.append(f"  Cards        : {cards}")
        return Result("\n".join(out) or f"No {kind} configured", {"items": rows})

    return handler


def _show_propagation(args: dict, ctx: Any) -> Result:
    samples = [round(s * 1000, 3) for s in ctx.system.propagation()]
    if not samples:
        return Result("No credential update has reached every card yet", {"samples_ms": []})
    ordered = sorted(samples)
    p50, p99 = ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    text = (
        f"Credential updates, publish to the last card's ack ({len(samples)} updates):\n"
        f"  median {p50:.2f} ms   p99 {p99:.2f} ms   last {samples[-1]:.2f} ms"
    )
    return Result(text, {"samples_ms": samples, "p50_ms": p50, "p99_ms": p99})


def _cmp_fetch(args: dict, ctx: Any) -> Deferred:
    card = getattr(ctx.session, "card", None)
    system = ctx.system

    async def work():
        return await system.cmp_fetch(card, args["name"], args["ca"])

    return Deferred(work, lambda summary: Result(summary))


def register(g: Grammar) -> None:
    cert, no_cert = _install("certificate")
    ca, no_ca = _install("ca-certificate")
    g.command(
        "config",
        "cmp cert-store location <path:STRING(1-256)> [ key reuse ]",
        _cert_store,
        no="cmp cert-store",
        no_handler=_no_cert_store,
        help=HELP,
    )
    g.command(
        "config",
        f"certificate name <name:{NAME}> {SOURCE} {KEY} "
        "[ cert-enc cert-hash-url <hash_url:URL> | cert-hash-url <hash_url:URL> ]",
        cert,
        no=f"certificate name <name:{NAME}>",
        no_handler=no_cert,
        help=HELP,
    )
    g.command(
        "config",
        f"ca-certificate name <name:{NAME}> {SOURCE}",
        ca,
        no=f"ca-certificate name <name:{NAME}>",
        no_handler=no_ca,
        help={**HELP, "name": "CA certificate name"},
    )
    g.command(
        "config",
        f"cmp auto-fetch current-name <name:{NAME}> ca-root <ca:{NAME}> time <days:INT(1-365)>",
        SetLine(
            "cmp-auto-fetch", data=lambda a: {"name": a["name"], "ca": a["ca"], "days": a["days"]}
        ),
        no="cmp auto-fetch",
        help=HELP,
    )
    g.command(
        "exec",
        "crypto rsa-keygen modulus { 512 | 1024 | 2048 | 4096 }@modulus id-type "
        "{ fqdn@id_type id <fqdn:STRING(1-256)> | ip@id_type id <ip:IPADDR> "
        "| rfc822-addr@id_type id <email:STRING(1-256)> } subject-name <subject:STRING(1-256)>",
        _rsa_keygen,
        help=HELP,
    )
    g.command(
        "exec", f"cmp fetch current-cert <name:{NAME}> ca-root <ca:{NAME}>", _cmp_fetch, help=HELP
    )
    g.command("exec", "show crypto csr", _show_csr, help=HELP)
    g.command(
        "exec",
        "show certificate propagation",
        _show_propagation,
        help={**HELP, "propagation": "Time from a credential update to the last card's ack"},
    )
    g.command("exec", f"show certificate [ name <name:{NAME}> ]", _show("certificate"), help=HELP)
    g.command(
        "exec",
        f"show ca-certificate [ name <name:{NAME}> ]",
        _show("ca-certificate"),
        help={**HELP, "name": "CA certificate name"},
    )
