"""careops: an operations control plane for healthcare service organisations."""

__version__ = "0.1.0"
