"""The event log: filtered pages and a live Server-Sent Events stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from pydantic import BeforeValidator
from sse_starlette.sse import EventSourceResponse

from ferry.api import schemas
from ferry.api.deps import Ctl, Reader
from ferry.api.routers.hosts import ERRORS
from ferry.services.events import MAX_EVENT_ID, MAX_PAGE, EventFilter

router = APIRouter(prefix="/v1/events", tags=["events"])

Kinds = Annotated[list[str] | None, Query(description="kind or kind prefix, e.g. host.maintenance")]


def _subject(
    kind: Kinds = None,
    host: str | None = None,
    actor: str | None = None,
    drain: str | None = None,
) -> EventFilter:
    """The filters both the page and the stream take: what the events are about."""
    return EventFilter(tuple(kind or ()), host, actor, drain)


Subject = Annotated[EventFilter, Depends(_subject)]


def _iso_time(value: object) -> object:
    """Times are ISO 8601 text, as the document says (format date-time) and as the API writes
    them; pydantic alone would also take a number as Unix seconds (`since=0.0`)."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a date-time like 2026-01-01T00:00:00Z") from None
    return value


Moment = Annotated[datetime | None, BeforeValidator(_iso_time)]


def _utc(moment: datetime | None) -> datetime | None:
    """Times without a zone are UTC, as every time the API returns is."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


@router.get("", response_model=schemas.EventPage, responses=ERRORS)
async def list_events(
    ctl: Ctl,
    _who: Reader,
    subject: Subject,
    since: Moment = None,
    until: Moment = None,
    before: Annotated[int | None, Query(ge=1, le=MAX_EVENT_ID)] = None,
    after: Annotated[int | None, Query(ge=0, le=MAX_EVENT_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
) -> schemas.EventPage:
    items = await ctl.events.page(
        replace(subject, since=_utc(since), until=_utc(until)),
        before=before,
        after=after,
        limit=limit,
        ascending=order == "asc",
    )
    cursor = items[-1].id if len(items) == limit else None
    return schemas.EventPage(
        items=[schemas.EventOut.model_validate(e) for e in items], next_cursor=cursor
    )


STREAM_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["id", "event", "data"],
    "properties": {
        "id": {"type": "string", "description": "the event's id, for Last-Event-ID"},
        "event": {"type": "string", "description": "the event's kind"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/EventOut"},
        },
    },
}


@router.get(
    "/stream",
    response_class=EventSourceResponse,  # the 200 answer is a stream of events, never JSON
    responses={
        **ERRORS,
        200: {
            "description": "Server-Sent Events, one per event of the log; `schema` describes each",
            "content": {"text/event-stream": {"schema": STREAM_EVENT}},
        },
    },
    summary="Live events as Server-Sent Events; resumes after Last-Event-ID",
)
async def stream_events(
    ctl: Ctl,
    _who: Reader,
    subject: Subject,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_EVENT_ID, description="replay events after this id")
    ] = None,
    last_event_id: Annotated[int | None, Header(ge=0, le=MAX_EVENT_ID)] = None,
) -> EventSourceResponse:
    start = last_event_id if last_event_id is not None else after
    if start is None:
        start = await ctl.events.last_id()
    flt = subject

    async def messages() -> AsyncIterator[dict[str, Any]]:
        async for event in ctl.events.tail(flt, start):
            body = schemas.EventOut.model_validate(event).model_dump_json()
            yield {"id": str(event.id), "event": event.kind, "data": body}

    return EventSourceResponse(messages(), ping=15)
