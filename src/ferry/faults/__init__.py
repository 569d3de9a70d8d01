"""Fault injection for drains: seeded scenarios that kill the controller, an agent or a guest, or
cut a migration link at a chosen point of a drain, and invariants checked once the cluster has
settled (`ferry faults run`)."""
