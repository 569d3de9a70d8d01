"""Everything one controller process owns, started and stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from datetime import timedelta

from ferry.agent_client import AgentClient
from ferry.config import ControllerSettings
from ferry.db.database import Database
from ferry.domain.convergence import ConvergencePolicy
from ferry.domain.drain_policy import DrainPolicy
from ferry.orchestrator.drains import DrainReconciler
from ferry.orchestrator.instances import InstanceReconciler
from ferry.orchestrator.loop import ReconcileLoop
from ferry.orchestrator.migration.reconciler import MigrationReconciler
from ferry.orchestrator.webhooks import DeliveryPolicy, WebhookNotifier
from ferry.pki.tls import ssl_context_client
from ferry.scheduler.setup import build as build_scheduler
from ferry.services.catalog import CatalogService
from ferry.services.events import EventService
from ferry.services.hosts import HostService, LivenessPolicy
from ferry.services.images import ImageService
from ferry.services.instances import InstanceService
from ferry.services.maintenance import MaintenanceService
from ferry.services.migrations import MigrationService
from ferry.services.placement import Placer
from ferry.services.server_groups import ServerGroupService
from ferry.services.store import EventBus, Store
from ferry.services.tokens import TokenService
from ferry.services.webhooks import WebhookService

log = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 1.0  # longest gap between two stored readings of a running migration


class Controller:
    def __init__(self, settings: ControllerSettings) -> None:
        self.settings = settings
        self.db = Database(settings.db_url)
        self.bus = EventBus()
        self.store = Store(self.db, self.bus)
        self.liveness = LivenessPolicy(
            timedelta(seconds=settings.heartbeat_interval), settings.heartbeat_misses
        )
        self.hosts = HostService(self.store, self.liveness)
        self.tokens = TokenService(self.store)
        self.events = EventService(self.store)
        self.catalog = CatalogService(self.store)
        self.images = ImageService(self.store, settings.images_dir, settings.image_max_bytes)
        self.server_groups = ServerGroupService(self.store)
        self.webhooks = WebhookService(self.store, settings.webhook_timeout)
        self.notifier = WebhookNotifier(
            self.store,
            DeliveryPolicy(
                timeout=settings.webhook_timeout,
                max_attempts=settings.webhook_max_attempts,
                backoff=settings.webhook_backoff,
                backoff_max=settings.webhook_backoff_max,
                idle=settings.reconcile_interval,
            ),
        )
        self.placer = Placer(
            build_scheduler(settings.scheduler_filters, settings.scheduler_weighers),
            self.liveness,
        )
        self.instances = InstanceService(self.store, self.placer)
        self.drain_defaults = DrainPolicy().with_overrides(settings.drain_policy)
        self.maintenance = MaintenanceService(self.store, self.placer, self.drain_defaults)
        self.agents = AgentClient(self._agent_tls())
        reconciler = InstanceReconciler(self.store, self.instances, self.agents)
        policy = ConvergencePolicy().with_overrides(settings.migration_policy)
        self.migrations = MigrationService(self.store, self.placer, policy)
        # A running migration's progress is stored at least every PROGRESS_INTERVAL_S, whatever
        # the reconcile interval: the migration loop passes at least that often, and reads a
        # migration's source at most twice in that time.
        migration_interval = min(settings.reconcile_interval, PROGRESS_INTERVAL_S)
        self.migrator = MigrationReconciler(self.store, self.agents, poll_s=migration_interval / 2)
        self.migration_loop = ReconcileLoop(
            "migrations", self.migrator.step, migration_interval, self.bus
        )
        drainer = DrainReconciler(self.store, self.placer, self.drain_defaults, policy)
        self.loops = [
            ReconcileLoop(
                "liveness",
                self.hosts.mark_down_silent_hosts,
                max(settings.heartbeat_interval / 2, 0.1),
            ),
            ReconcileLoop(
                "drains",
                drainer.step,
                settings.reconcile_interval,
                self.bus,
            ),
            ReconcileLoop("instances", reconciler.step, settings.reconcile_interval, self.bus),
            self.migration_loop,
            ReconcileLoop("webhooks", self.notifier.step, settings.reconcile_interval, self.bus),
        ]
        self._tasks: list[asyncio.Task[None]] = []

    def migration_events(self, host: str, instance_ids: list[str]) -> int:
        """An agent's hypervisor announced these guests' migrations changed: read them now.
        Returns how many belong to a migration in flight through `host`."""
        accepted = self.migrator.hint(host, instance_ids)
        if accepted:
            self.migration_loop.wake()
        return accepted

    def _agent_tls(self) -> ssl.SSLContext | None:
        s = self.settings
        if s.tls_cert and s.tls_key and s.tls_ca:
            return ssl_context_client(cert=s.tls_cert, key=s.tls_key, ca=s.tls_ca)
        return None

    async def start(self) -> None:
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        await self.db.upgrade()
        if await self.tokens.bootstrap(self.settings.admin_token_file):
            log.warning("created the first admin token in %s", self.settings.admin_token_file)
        await self.images.sweep()
        self._tasks = [asyncio.create_task(loop.run(), name=loop.name) for loop in self.loops]

    async def stop(self, grace: float = 5.0) -> None:
        for loop in self.loops:
            loop.stop()
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=grace)
            for task in pending:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._tasks = []
        await self.migrator.close()
        await self.notifier.close()
        await self.agents.close()
        await self.db.dispose()
