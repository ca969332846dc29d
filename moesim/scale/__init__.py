"""The reduced engine for thousands of GPUs: lanes, phases and symmetry (docs/scale.md)."""
