"""Placement: which host may take an instance, and which of those is best. Pure: no I/O."""
