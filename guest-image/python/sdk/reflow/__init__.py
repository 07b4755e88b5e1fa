"""Reflow sandbox SDK for Python actors (runs inside the guest)."""
