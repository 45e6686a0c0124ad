"""Sans-IO IKEv2 (RFC 7296): constants, wire codec and crypto.

Nothing in this package does I/O, reads clocks or draws randomness by itself;
callers inject ``rand(n) -> bytes``.
"""
