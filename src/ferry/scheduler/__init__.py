"""Placement: which hosts may take an instance (filters), which of them is best (weighers), and
the joint evacuation plan of a whole host (planner). Pure: no I/O."""
