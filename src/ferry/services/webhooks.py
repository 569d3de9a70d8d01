"""Webhook subscriptions: create, list, show, enable/disable, delete, and a test delivery; and
what one delivery is: a CloudEvents 1.0 JSON document (structured mode) signed with the
subscription's secret, POSTed once with a deadline. Retries and cursors are the delivery loop's
(orchestrator/webhooks.py)."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ferry import __version__
from ferry.db.models import Event, WebhookSubscription
from ferry.db.types import utcnow
from ferry.domain import webhooks as rules
from ferry.domain.errors import Conflict, NotFound
from ferry.domain.events import EventKind
from ferry.services.catalog import _name
from ferry.services.store import Store, record

SOURCE = "/ferry/controller"
TYPE_PREFIX = "io.ferry."
CONTENT_TYPE = "application/cloudevents+json"
ATTEMPT_HEADER = "X-Ferry-Attempt"
WEBHOOK_HEADER = "X-Ferry-Webhook"
PING_TYPE = TYPE_PREFIX + "webhook.ping"


@dataclass(frozen=True)
class WebhookView:
    name: str
    url: str
    kinds: tuple[str, ...]
    enabled: bool
    cursor: int
    pending: int
    attempts: int
    delivered: int
    failures: int
    last_status: int | None
    last_error: str | None
    last_error_at: datetime | None
    last_delivery_at: datetime | None
    created_by: str
    created_at: datetime


@dataclass(frozen=True)
class CreatedWebhook:
    view: WebhookView
    secret: str


@dataclass(frozen=True)
class Target:
    """What a delivery needs: where, signed with what, and which events."""

    id: int
    name: str
    url: str
    secret: str
    kinds: tuple[str, ...]

    @classmethod
    def of(cls, sub: WebhookSubscription) -> Target:
        return cls(sub.id, sub.name, sub.url, sub.secret, tuple(sub.kinds))


@dataclass(frozen=True)
class Outcome:
    """One attempt: delivered means a 2xx answer within the deadline."""

    delivered: bool
    status: int | None
    error: str | None
    elapsed: float


def _kind_clause(prefixes: tuple[str, ...]) -> ColumnElement[bool]:
    def any_of(names: tuple[str, ...]) -> ColumnElement[bool]:
        return or_(
            *(
                (Event.kind == name) | Event.kind.startswith(name + ".", autoescape=True)
                for name in names
            )
        )

    return and_(any_of(rules.FAMILIES), any_of(prefixes or rules.FAMILIES))


async def pending_events(
    session: AsyncSession, prefixes: tuple[str, ...], after: int, limit: int
) -> list[Event]:
    """The events a subscription still has to handle, oldest first."""
    query = (
        select(Event)
        .where(Event.id > after, _kind_clause(prefixes))
        .order_by(Event.id.asc())
        .limit(limit)
    )
    return list((await session.scalars(query)).all())


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def cloudevent(event: Event) -> dict[str, Any]:
    """The event as a CloudEvents 1.0 structured-mode document."""
    subject = event.instance_id or event.host
    envelope: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(event.id),
        "source": SOURCE,
        "type": TYPE_PREFIX + event.kind,
        "time": _rfc3339(event.at),
        "datacontenttype": "application/json",
        "data": {
            "actor": event.actor,
            "message": event.message,
            "host": event.host,
            "instance_id": event.instance_id,
            "migration_id": event.migration_id,
            "drain_id": event.drain_id,
            "data": event.data,
        },
    }
    if subject:
        envelope["subject"] = subject
    return envelope


def ping(name: str, actor: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"ping-{uuid.uuid4()}",
        "source": SOURCE,
        "type": PING_TYPE,
        "time": _rfc3339(utcnow()),
        "subject": name,
        "datacontenttype": "application/json",
        "data": {
            "actor": actor,
            "message": f"test delivery for webhook {name}",
            "host": None,
            "instance_id": None,
            "migration_id": None,
            "drain_id": None,
            "data": {},
        },
    }


def encode(envelope: dict[str, Any]) -> bytes:
    return json.dumps(envelope, separators=(",", ":"), sort_keys=True).encode()


def client(timeout: float) -> httpx.AsyncClient:
    """A client for one subscription's deliveries (or one test): no redirects followed."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        headers={"User-Agent": f"ferry/{__version__}"},
    )


def _describe(exc: Exception, timeout: float) -> str:
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return f"no answer within {timeout:g}s"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


async def post(
    http: httpx.AsyncClient,
    target: Target,
    body: bytes,
    *,
    attempt: int,
    within: float,
) -> Outcome:
    """POST one signed document; the whole exchange must end within `within` seconds."""
    headers = {
        "Content-Type": CONTENT_TYPE,
        rules.SIGNATURE_HEADER: rules.signature(target.secret, body),
        rules.TIMESTAMP_HEADER: str(int(time.time())),
        ATTEMPT_HEADER: str(attempt),
        WEBHOOK_HEADER: target.name,
    }
    started = time.monotonic()
    try:
        async with asyncio.timeout(within):
            response = await http.post(target.url, content=body, headers=headers)
    except (httpx.HTTPError, httpx.InvalidURL, TimeoutError, OSError) as exc:
        return Outcome(False, None, _describe(exc, within), time.monotonic() - started)
    elapsed = time.monotonic() - started
    if response.is_success:
        return Outcome(True, response.status_code, None, elapsed)
    reason = f" {response.reason_phrase}" if response.reason_phrase else ""
    return Outcome(False, response.status_code, f"HTTP {response.status_code}{reason}", elapsed)


async def get_webhook(session: AsyncSession, name: str) -> WebhookSubscription:
    sub = await session.scalar(select(WebhookSubscription).where(WebhookSubscription.name == name))
    if sub is None:
        raise NotFound(f"no webhook named {name!r}")
    return sub


async def _pending(session: AsyncSession, sub: WebhookSubscription) -> int:
    query = select(func.count(Event.id)).where(
        Event.id > sub.cursor, _kind_clause(tuple(sub.kinds))
    )
    return int(await session.scalar(query) or 0)


def _view(sub: WebhookSubscription, pending: int) -> WebhookView:
    return WebhookView(
        name=sub.name,
        url=sub.url,
        kinds=tuple(sub.kinds),
        enabled=sub.enabled,
        cursor=sub.cursor,
        pending=pending,
        attempts=sub.attempts,
        delivered=sub.delivered,
        failures=sub.failures,
        last_status=sub.last_status,
        last_error=sub.last_error,
        last_error_at=sub.last_error_at,
        last_delivery_at=sub.last_delivery_at,
        created_by=sub.created_by,
        created_at=sub.created_at,
    )


def _receiver(url: str) -> str:
    """The receiving host, for events: URLs may carry a credential, the host name does not."""
    return urlsplit(url).hostname or ""


class WebhookService:
    def __init__(self, store: Store, timeout: float) -> None:
        self.store = store
        self.timeout = timeout

    async def create(
        self,
        name: str,
        url: str,
        kinds: list[str] | None,
        secret: str | None,
        actor: str,
    ) -> CreatedWebhook:
        """A new subscription receives the events committed after it."""
        _name("webhook", name)
        url = rules.webhook_url(url)
        prefixes = rules.kind_prefixes(kinds)
        secret = rules.webhook_secret(secret) if secret is not None else secrets.token_urlsafe(32)
        async with self.store.write() as session:
            if await session.scalar(
                select(WebhookSubscription.id).where(WebhookSubscription.name == name)
            ):
                raise Conflict(f"a webhook named {name!r} exists already")
            last = await session.scalar(select(func.max(Event.id))) or 0
            sub = WebhookSubscription(
                name=name,
                url=url,
                secret=secret,
                kinds=prefixes,
                enabled=True,
                cursor=last,
                attempts=0,
                delivered=0,
                failures=0,
                created_by=actor,
            )
            session.add(sub)
            record(
                session,
                EventKind.WEBHOOK_CREATED,
                actor,
                f"webhook {name} created ({', '.join(prefixes)})",
                data={"webhook": name, "receiver": _receiver(url), "kinds": prefixes},
            )
            await session.flush()
            return CreatedWebhook(_view(sub, 0), secret)

    async def all(self) -> list[WebhookView]:
        async with self.store.reading() as session:
            subs = (
                await session.scalars(
                    select(WebhookSubscription).order_by(WebhookSubscription.name)
                )
            ).all()
            return [_view(sub, await _pending(session, sub)) for sub in subs]

    async def get(self, name: str) -> WebhookView:
        async with self.store.reading() as session:
            sub = await get_webhook(session, name)
            return _view(sub, await _pending(session, sub))

    async def set_enabled(self, name: str, enabled: bool, actor: str) -> WebhookView:
        """A disabled webhook keeps its cursor: enabled again, it catches up from there."""
        async with self.store.write() as session:
            sub = await get_webhook(session, name)
            if sub.enabled != enabled:
                sub.enabled = enabled
                kind = EventKind.WEBHOOK_ENABLED if enabled else EventKind.WEBHOOK_DISABLED
                record(
                    session,
                    kind,
                    actor,
                    f"webhook {name} {'enabled' if enabled else 'disabled'}",
                    data={"webhook": name},
                )
                await session.flush()
            return _view(sub, await _pending(session, sub))

    async def delete(self, name: str, actor: str) -> None:
        async with self.store.write() as session:
            sub = await get_webhook(session, name)
            record(
                session,
                EventKind.WEBHOOK_DELETED,
                actor,
                f"webhook {name} deleted",
                data={"webhook": name, "receiver": _receiver(sub.url), "cursor": sub.cursor},
            )
            await session.delete(sub)

    async def test(self, name: str, actor: str) -> tuple[str, Outcome]:
        """Send a ping now, once, whether the webhook is enabled or not; nothing is recorded."""
        async with self.store.reading() as session:
            target = Target.of(await get_webhook(session, name))
        envelope = ping(name, actor)
        async with client(self.timeout) as http:
            outcome = await post(http, target, encode(envelope), attempt=1, within=self.timeout)
        return str(envelope["id"]), outcome
