"""plumbline: audit projects generated from the plumbline template, and check a built service."""

__version__ = "0.1.0"
