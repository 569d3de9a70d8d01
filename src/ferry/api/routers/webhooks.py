"""Webhooks: subscriptions that receive maintenance, drain and migration events as signed
CloudEvents. URLs often carry a credential (chat services put one in the path), so reading them
needs the operator role too; the signing secret is shown only when a webhook is created."""

from __future__ import annotations

from fastapi import APIRouter, Response

from ferry.api import schemas
from ferry.api.deps import Ctl, Operator
from ferry.api.routers.hosts import ERRORS
from ferry.services.webhooks import WebhookView

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


def _out(view: WebhookView) -> schemas.WebhookOut:
    return schemas.WebhookOut(
        name=view.name,
        url=view.url,
        kinds=list(view.kinds),
        enabled=view.enabled,
        cursor=view.cursor,
        pending=view.pending,
        attempts=view.attempts,
        delivered=view.delivered,
        failures=view.failures,
        last_status=view.last_status,
        last_error=view.last_error,
        last_error_at=view.last_error_at,
        last_delivery_at=view.last_delivery_at,
        created_by=view.created_by,
        created_at=view.created_at,
    )


@router.get("", response_model=list[schemas.WebhookOut], responses=ERRORS)
async def list_webhooks(ctl: Ctl, _who: Operator) -> list[schemas.WebhookOut]:
    return [_out(w) for w in await ctl.webhooks.all()]


@router.post("", response_model=schemas.WebhookCreatedOut, status_code=201, responses=ERRORS)
async def create_webhook(
    ctl: Ctl, who: Operator, body: schemas.WebhookIn
) -> schemas.WebhookCreatedOut:
    created = await ctl.webhooks.create(body.name, body.url, body.kinds, body.secret, who.name)
    return schemas.WebhookCreatedOut(**_out(created.view).model_dump(), secret=created.secret)


@router.get("/{name}", response_model=schemas.WebhookOut, responses=ERRORS)
async def show_webhook(ctl: Ctl, _who: Operator, name: str) -> schemas.WebhookOut:
    return _out(await ctl.webhooks.get(name))


@router.delete("/{name}", status_code=204, responses=ERRORS)
async def delete_webhook(ctl: Ctl, who: Operator, name: str) -> Response:
    await ctl.webhooks.delete(name, who.name)
    return Response(status_code=204)


@router.post("/{name}/disable", response_model=schemas.WebhookOut, responses=ERRORS)
async def disable_webhook(ctl: Ctl, who: Operator, name: str) -> schemas.WebhookOut:
    return _out(await ctl.webhooks.set_enabled(name, False, who.name))


@router.post("/{name}/enable", response_model=schemas.WebhookOut, responses=ERRORS)
async def enable_webhook(ctl: Ctl, who: Operator, name: str) -> schemas.WebhookOut:
    return _out(await ctl.webhooks.set_enabled(name, True, who.name))


@router.post("/{name}/test", response_model=schemas.WebhookTestOut, responses=ERRORS)
async def test_webhook(ctl: Ctl, who: Operator, name: str) -> schemas.WebhookTestOut:
    """Send a signed ping (type io.ferry.webhook.ping) now and report the receiver's answer."""
    event_id, outcome = await ctl.webhooks.test(name, who.name)
    return schemas.WebhookTestOut(
        name=name,
        event_id=event_id,
        delivered=outcome.delivered,
        status=outcome.status,
        error=outcome.error,
        elapsed_ms=round(outcome.elapsed * 1000, 1),
    )
