"""Contrast."""
