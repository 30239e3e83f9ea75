"""The Coordinator CA hierarchy: deterministic root, per-generation intermediate + mesh CA, leaves."""
