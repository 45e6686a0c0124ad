"""CMPv2 (RFC 4210 / RFC 9480) for certificate enrollment, sans-IO.

- `codec`: decode any PKIMessage into plain views; build every message a client or a CA sends.
- `protection`: PBM and signature protection, produced and verified.
- `client`: one enrollment transaction (ir/cr/kur) as a state machine for the supervisor runner.

Nothing here does I/O, reads the clock or draws randomness by itself: bytes and `now` go in,
bytes and steps come out, and randomness comes from an injected `rand(n)`.
"""

from supervisor.pki.cmp.asn1 import CmpError
from supervisor.pki.cmp.client import (
    Done,
    Enrollment,
    Failed,
    Protection,
    Send,
    State,
    Step,
    Transaction,
    Wait,
)

__all__ = [
    "CmpError",
    "Done",
    "Enrollment",
    "Failed",
    "Protection",
    "Send",
    "State",
    "Step",
    "Transaction",
    "Wait",
]
