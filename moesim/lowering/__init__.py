"""Lowering: model + plan + schedule + routing -> engine tasks (docs/architecture.md)."""
