"""Use cases of the controller: each is one transaction that changes state and records events."""
