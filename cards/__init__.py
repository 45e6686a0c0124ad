"""Packet-card (DPC/VSM) software of the StarOS SeGW simulator."""

# Checked at start-up: PyPI has an unrelated project that is also named `cards`.
DISTRIBUTION = "staros-segw-sim"
