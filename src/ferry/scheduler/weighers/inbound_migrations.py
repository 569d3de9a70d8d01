"""Migrations in flight towards the host: each costs the destination link and CPU, so by
default a host already receiving is less attractive (negative multiplier)."""

from __future__ import annotations

from ferry.scheduler.model import Candidate, Request


class InboundMigrations:
    name = "inbound_migrations"
    default_multiplier = -1.0

    def raw(self, host: Candidate, request: Request) -> float:
        return float(host.inbound)


WEIGHER = InboundMigrations()
