"""Metrics, logging and the other ways careops shows what it is doing."""
