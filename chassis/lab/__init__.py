"""The simulated world around the gateway: CA/RA, OCSP responder, CRL publisher, eNodeBs.

Lab peers run as their own processes (started by the backplane when the topology's `lab:`
section asks for them). They reuse the sans-IO engines and codecs of the cards and the
supervisor, never a runner.
"""
