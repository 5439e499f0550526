"""Outbound connectors: what careops sends to other systems."""
