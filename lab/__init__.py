"""Probes and retired code kept for reference; not part of the moesim package (see README.md)."""
