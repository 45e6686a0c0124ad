"""Show-command renderers: plain data in, (text, JSON data) out. Column layouts follow
real StarOS captures (see /work/shared/STAROS-CLI.md section 3)."""

from __future__ import annotations

from .config import Block, Config

# Card Type column text per card type code (ASR 5500 and ASR 9000 VSM chassis).
CARD_TYPES = {
    "dpc": ("DPC", "Data Processing Card 2"),
    "mio": ("MMIO", "Management & 20x10Gb I/O Card"),
    "mmio": ("MMIO", "Management & 20x10Gb I/O Card"),
    "fsc": ("FSC", "Fabric & Storage Card"),
    "ssc": ("SSC", "System Status Card"),
    "rsp": ("RSP", "Route Switch Processor"),
    "vsm": ("VSM", "Virtualized Service Module"),
}
_RUNNING = {"active", "running", "ready", "up"}


def _oper_state(card: dict) -> str:
    state = str(card.get("state") or "").lower()
    if not state:
        return "-"
    if state in _RUNNING and card.get("role"):
        return str(card["role"]).title()  # a running card shows its role: Active / Standby
    return state.title()


def _spof(card: dict) -> str:
    spof = card.get("spof")
    return "-" if spof is None else ("Yes" if spof else "No")


def card_table(cards: list[dict]) -> tuple[str, dict]:
    lines = [
        "Slot         Card Type                               Oper State     SPOF  Tunnels  Attach",
        "-----------  --------------------------------------  -------------  ----  -------  ------",
    ]
    rows = []
    for card in sorted(cards, key=lambda c: int(c.get("slot", 0))):
        kind = card.get("type")
        if kind is None:
            label, desc, state, spof = card.get("label") or "", "None", "-", "-"
        else:
            code, text = CARD_TYPES.get(str(kind).lower(), (str(kind).upper(), str(kind)))
            label = card.get("label") or code
            desc = card.get("description") or text
            state, spof = _oper_state(card), _spof(card)
        attach = str(card.get("attach") or "")
        slot = int(card.get("slot", 0))
        sas = (card.get("counters") or {}).get("ike_sas")  # IKE SAs (ours: a packet card's load)
        tunnels = "" if sas is None else str(sas)
        line = f"{slot:>2}: {label:<7}  {desc:<38}  {state:<13}  {spof:<4}  {tunnels:>7}  {attach}"
        lines.append(line.rstrip())
        rows.append({**card, "card_type": desc, "oper_state": state, "spof_text": spof})
    return "\n".join(lines), {"cards": rows}


_VERSION_FIELDS = (
    ("image_version", "Image Version:"),
    ("build", "Image Build Number:"),
    ("description", "Image Description:"),
    ("date", "Image Date:"),
    ("boot_image", "Boot Image:"),
    ("commit", "Source Commit ID:"),
)


def version(info: dict) -> tuple[str, dict]:
    lines = ["Active Software:"]
    for key, label in _VERSION_FIELDS:
        if info.get(key) is not None:
            lines.append(f"  {label:<32}{info[key]}")
    return "\n".join(lines), dict(info)


def context_all(config: Config) -> tuple[str, dict]:
    lines = [
        "Context Name    ContextID    State     Description",
        "--------------- --------- ----------   -----------------------",
    ]
    rows = []
    for cid, ctx in enumerate(config.contexts(), 1):
        out_of_service = any(b.errors for b in ctx.walk())
        state = "Inactive" if ctx.errors else "Active"
        lines.append(f"{ctx.name:<15} {cid:<12} {state:<10}".rstrip())
        rows.append({"name": ctx.name, "id": cid, "state": state, "errors": out_of_service})
    return "\n".join(lines), {"contexts": rows}


BANNER = "#" * 86


def where(block: Block) -> str:
    return ", ".join(block.path()) or "global"


def config_errors(config: Config, under: Block | None, verbose: bool) -> tuple[str, dict]:
    """`show configuration errors [verbose]` in the StarOS section shape. The simulator's
    only error source is the boot configuration: each errored block is out of service."""
    blocks = config.errored_blocks(under)
    errors = [
        {"block": where(b), "line_no": e.line_no, "line": e.text, "message": e.message}
        for b in blocks
        for e in b.errors
    ]
    lines = [BANNER, "#                   Displaying Global configuration errors", BANNER]
    for e in errors:
        at = f"line {e['line_no']}: " if e["line_no"] else ""
        lines.append(f"Error   : {e['block']}: {at}{e['line']}: {e['message']}")
    lines.append(f"Total {len(errors)} error(s) in this section !")
    lines.append("")
    out_of_service = [where(b) for b in blocks if b is not config.root]
    if verbose:
        for w in out_of_service:
            lines.append(f"Info    : {w} is out of service until its errors are fixed")
            lines.append("")
    lines.append("Total 0 warning(s) in this section!")
    data = {"errors": errors, "total": len(errors), "out_of_service": out_of_service}
    return "\n".join(lines), data
