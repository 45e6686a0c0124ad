"""StarOS CMPv2 commands (reference: "Certificate Management Protocol (CMPv2)").

Exec:
  cmp initialize modulus M cert-name N subject-name "S" ca-psk KEY ca-root CA ca-url URL   (ir, PBM)
  cmp enroll current-cert OLD modulus M subject-name "S" cert-name N ca-root CA ca-url URL (cr, signed with OLD)
  cmp update current-cert OLD modulus M ca-root CA ca-url URL                              (kur, signed with OLD)
  cmp poll current-cert NAME                 show cmp outstanding-req | statistics | history
  clear cmp cert-name NAME                   clear cmp statistics
A transaction that the CA answers at once ends before the command returns. One the CA
makes wait (polling) goes on in the background: the command says so, and the issued
certificate lands in the store (and on the cards) when it comes.
"""

from __future__ import annotations

from typing import Any

from supervisor.cli import CommandFailure, Deferred, Result, SetLine
from supervisor.cli.grammar import Grammar

NAME = "NAME(1-256)"
MODULUS = "modulus { 512 | 1024 | 2048 | 4096 }@modulus"
HELP = {
    "cmp": "Certificate Management Protocol (CMPv2) operations",
    "initialize": "Initial enrolment (ir) protected with a pre-shared key",
    "enroll": "Enrolment of a new certificate (cr), signed with a current certificate",
    "update": "Key update (kur) of a current certificate",
    "poll": "Polls the CA now for an outstanding request",
    "modulus": "RSA key size of the new key pair",
    "cert-name": "Name under which the issued certificate is stored",
    "subject-name": 'Subject, e.g. "/C=US/O=Operator/CN=segw.example.net"',
    "ca-psk": "Pre-shared key agreed with the CA (PBM protection)",
    "vendor-cert": "Sign the request with this vendor certificate (3GPP TS 33.310 initial enrolment)",
    "hash-algorithm": "Digest for CMP signatures and protection (sha1 only if the CA needs it)",
    "ca-root": "Name of the CA's root certificate (a configured ca-certificate)",
    "ca-url": "The CA's CMP URL, e.g. http://ca.example.net:8080/pkix/",
    "current-cert": "Name of the certificate in force",
    "outstanding-req": "Requests that wait for the CA",
    "statistics": "Messages and transactions counted",
    "history": "The last 100 transactions",
    "clear": "Clears state",
}


def _run(kind: str):
    def handler(args: dict, ctx: Any) -> Deferred:
        system = ctx.system
        boot, card = ctx.session.boot, getattr(ctx.session, "card", None)

        async def work():
            return await system.cmp_enroll(kind, args, boot=boot, card=card)

        return Deferred(work, lambda text: Result(text))

    return handler


def _poll(args: dict, ctx: Any) -> Result:
    if not ctx.system.cmp.poll_now(args["name"]):
        raise CommandFailure(
            f"no outstanding CMP request for certificate {args['name']} is polling"
        )
    return Result(f"Info: polling the CA now for certificate {args['name']}")


def _show_outstanding(args: dict, ctx: Any) -> Result:
    rows = []
    for out in ctx.system.cmp.outstanding.values():
        rows.append(
            {
                "cert": out.cert_name,
                "type": out.kind,
                "ca": out.ca_root,
                "url": out.url,
                "started": out.started,
                "state": out.state,
                "polls": out.polls,
                "next_poll": out.next_poll,
            }
        )
    if not rows:
        return Result("No outstanding CMP requests", {"requests": []})
    lines = [f"{'Certificate':<20} {'Type':<5} {'State':<9} {'Polls':>5}  CA / URL"]
    for r in rows:
        lines.append(
            f"{r['cert']:<20} {r['type']:<5} {r['state']:<9} {r['polls']:>5}  {r['ca']} {r['url']}"
        )
    return Result("\n".join(lines), {"requests": rows})


def _show_statistics(args: dict, ctx: Any) -> Result:
    cmp = ctx.system.cmp
    kinds = sorted(set(cmp.sent) | set(cmp.received) | set(cmp.failed))
    lines = ["CMP messages:", f"  {'Type':<10} {'Sent':>6} {'Received':>9} {'Failed':>7}"]
    for k in kinds:
        lines.append(f"  {k:<10} {cmp.sent[k]:>6} {cmp.received[k]:>9} {cmp.failed[k]:>7}")
    lines += ["CMP transactions:", f"  {'Type':<10} {'Success':>8} {'Failure':>8}"]
    for t in ("ir", "cr", "kur"):
        lines.append(f"  {t:<10} {cmp.results[(t, 'success')]:>8} {cmp.results[(t, 'failure')]:>8}")
    data = {
        "messages": {
            k: {"sent": cmp.sent[k], "received": cmp.received[k], "failed": cmp.failed[k]}
            for k in kinds
        },
        "transactions": {
            t: {"success": cmp.results[(t, "success")], "failure": cmp.results[(t, "failure")]}
            for t in ("ir", "cr", "kur")
        },
    }
    return Result("\n".join(lines), data)


def _show_history(args: dict, ctx: Any) -> Result:
    rows = list(ctx.system.cmp.history)
    if not rows:
        return Result("No CMP transactions yet", {"history": []})
    lines = [f"{'Time':<25} {'Type':<4} {'Certificate':<16} {'CA':<12} {'Result':<8} Reason"]
    for r in rows:
        lines.append(
            f"{r['time']:<25} {r['type']:<4} {r['cert']:<16} {r['ca']:<12} {r['result']:<8} {r['reason']}"
        )
    return Result("\n".join(lines), {"history": rows})


def _clear_cert(args: dict, ctx: Any) -> Result:
    if not ctx.system.cmp.clear(args["name"]):
        raise CommandFailure(f"no CMP request for certificate {args['name']}")
    return Result(f"Info: CMP request for certificate {args['name']} cleared")


def _clear_statistics(args: dict, ctx: Any) -> None:
    ctx.system.cmp.clear_statistics()


def register(g: Grammar) -> None:
    g.command(
        "config",
        "cmp hash-algorithm { sha1 | sha256 }@hash",
        SetLine("cmp-hash-algorithm", data=lambda a: {"hash": a["hash"]}),
        no="cmp hash-algorithm",
        help=HELP,
    )
    g.command(
        "config",
        "cmp cert-trap time <hours:INT(1-8760)>",
        SetLine("cmp-cert-trap", data=lambda a: {"hours": a["hours"]}),
        no="cmp cert-trap",
        help={
            **HELP,
            "cert-trap": "An SNMP trap before a certificate expires",
            "time": "Hours before expiry",
        },
    )
    g.command(
        "config",
        "snmp target <name:NAME(1-64)> <address:IPADDR> [ port <port:INT(1-65535)> ] community <community:STRING(1-64)>",
        SetLine(
            "snmp-target",
            "name",
            data=lambda a: {
                "address": a["address"],
                "port": a.get("port") or 162,
                "community": a["community"],
            },
        ),
        no="snmp target <name:NAME(1-64)>",
        help={
            "snmp": "SNMP settings",
            "target": "A receiver of SNMPv2c notifications",
            "port": "UDP port (default 162)",
            "community": "Community string",
        },
    )
    g.command(
        "exec",
        f"cmp initialize {MODULUS} cert-name <cert:{NAME}> subject-name <subject:STRING(1-256)> "
        f"{{ ca-psk <psk:STRING(1-256)> | vendor-cert <vendor:{NAME}> }} ca-root <ca:{NAME}> ca-url <url:URL>",
        _run("ir"),
        help=HELP,
    )
    g.command(
        "exec",
        f"cmp enroll current-cert <old:{NAME}> {MODULUS} subject-name <subject:STRING(1-256)> "
        f"cert-name <cert:{NAME}> ca-root <ca:{NAME}> ca-url <url:URL>",
        _run("cr"),
        help=HELP,
    )
    g.command(
        "exec",
        f"cmp update current-cert <old:{NAME}> {MODULUS} ca-root <ca:{NAME}> ca-url <url:URL>",
        _run("kur"),
        help=HELP,
    )
    g.command("exec", f"cmp poll current-cert <name:{NAME}>", _poll, help=HELP)
    g.command("exec", "show cmp outstanding-req", _show_outstanding, help=HELP)
    g.command("exec", "show cmp statistics", _show_statistics, help=HELP)
    g.command("exec", "show cmp history", _show_history, help=HELP)
    g.command("exec", f"clear cmp cert-name <name:{NAME}>", _clear_cert, help=HELP)
    g.command("exec", "clear cmp statistics", _clear_statistics, help=HELP)
