"""Management-card (MIO/RSP) software of the StarOS SeGW simulator."""

# Checked at start-up: PyPI has an unrelated project that is also named `supervisor`.
DISTRIBUTION = "staros-segw-sim"
