"""IKEv2 configuration on the management card (crypto templates, transform sets, services)."""
