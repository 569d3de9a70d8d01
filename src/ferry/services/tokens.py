"""API tokens: bootstrap admin, create, list, revoke, and authentication of bearer secrets."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ferry.db.models import ApiToken
from ferry.db.types import utcnow
from ferry.domain import validation
from ferry.domain.auth import Role
from ferry.domain.errors import Conflict, NotFound, Unauthenticated
from ferry.domain.events import SYSTEM_ACTOR, EventKind
from ferry.services.store import Store, record

SECRET_PREFIX = "ferry_"
BOOTSTRAP_NAME = "admin"
_LAST_USED_RESOLUTION = timedelta(minutes=1)
# How long a successful authentication is remembered. Revocation through this controller takes
# effect at once (it forgets the token); a revocation written by another process, within this.
_REMEMBER_S = 5.0


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name is the actor recorded in events."""

    token_id: str
    name: str
    role: Role


@dataclass
class _Remembered:
    principal: Principal
    last_used_at: datetime | None
    until: float  # time.monotonic()


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str


class TokenService:
    def __init__(self, store: Store) -> None:
        self.store = store
        # Every API request authenticates: a few seconds' memory of each valid secret spares a
        # session and a query per request (keyed by digest, so no secret is kept).
        self._remembered: dict[str, _Remembered] = {}
        self._generation = 0

    async def create(self, name: str, role: Role, actor: str) -> IssuedToken:
        name = validation.token_name(name)
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        async with self.store.write() as session:
            if await session.scalar(select(ApiToken).where(ApiToken.name == name)):
                raise Conflict(f"a token named {name!r} exists already")
            token = ApiToken(
                id=secrets.token_hex(6),
                name=name,
                role=role.value,
                secret_sha256=_digest(secret),
                created_by=actor,
            )
            session.add(token)
            record(
                session,
                EventKind.TOKEN_CREATED,
                actor,
                f"token {name} created with role {role.value}",
                data={"token": name, "role": role.value},
            )
        return IssuedToken(token, secret)

    async def list(self, include_revoked: bool = False) -> list[ApiToken]:
        query = select(ApiToken).order_by(ApiToken.created_at)
        if not include_revoked:
            query = query.where(ApiToken.revoked_at.is_(None))
        async with self.store.reading() as session:
            return list((await session.scalars(query)).all())

    async def revoke(self, name_or_id: str, actor: str) -> ApiToken:
        async with self.store.write() as session:
            token = await session.scalar(
                select(ApiToken).where((ApiToken.name == name_or_id) | (ApiToken.id == name_or_id))
            )
            if token is None:
                raise NotFound(f"no token named {name_or_id!r}")
            if token.revoked_at is not None:
                raise Conflict(f"token {token.name!r} is revoked already")
            if token.role == Role.ADMIN and await self._active_admins(session) == 1:
                raise Conflict(
                    f"token {token.name!r} is the last admin token; create another admin first"
                )
            token.revoked_at = utcnow()
            token.revoked_by = actor
            record(
                session,
                EventKind.TOKEN_REVOKED,
                actor,
                f"token {token.name} revoked",
                data={"token": token.name, "role": token.role},
            )
        self._forget()
        return token

    @staticmethod
    async def _active_admins(session: AsyncSession) -> int:
        return (
            await session.scalar(
                select(func.count())
                .select_from(ApiToken)
                .where(ApiToken.role == Role.ADMIN.value, ApiToken.revoked_at.is_(None))
            )
            or 0
        )

    async def authenticate(self, secret: str) -> Principal:
        digest = _digest(secret)
        known = self._remembered.get(digest)
        if known is None or known.until < time.monotonic():
            known = await self._look_up(digest)
        now = utcnow()
        if known.last_used_at is None or now - known.last_used_at > _LAST_USED_RESOLUTION:
            async with self.store.db.writing() as session:
                stored = await session.get(ApiToken, known.principal.token_id)
                if stored is not None:
                    stored.last_used_at = now
            known.last_used_at = now
        return known.principal

    async def _look_up(self, digest: str) -> _Remembered:
        generation = self._generation
        async with self.store.reading() as session:
            token = await session.scalar(
                select(ApiToken).where(
                    ApiToken.secret_sha256 == digest, ApiToken.revoked_at.is_(None)
                )
            )
        if token is None:
            self._remembered.pop(digest, None)
            raise Unauthenticated("the bearer token is unknown or revoked")
        known = _Remembered(
            Principal(token.id, token.name, Role(token.role)),
            token.last_used_at,
            time.monotonic() + _REMEMBER_S,
        )
        if generation == self._generation:
            self._remembered[digest] = known
        return known

    def _forget(self) -> None:
        """After a revocation commits: forget every token, and make a look-up that read
        before the commit (and finishes after it) not remember what it read."""
        self._remembered.clear()
        self._generation += 1

    async def bootstrap(self, token_file: Path) -> bool:
        """On the first start (no token at all) create an admin token into a 0600 file."""
        async with self.store.reading() as session:
            existing = await session.scalar(select(func.count()).select_from(ApiToken))
        if existing:
            return False
        issued = await self.create(BOOTSTRAP_NAME, Role.ADMIN, SYSTEM_ACTOR)
        await asyncio.to_thread(write_secret_file, token_file, issued.secret)
        return True


def write_secret_file(path: Path, secret: str) -> None:
    """Write `secret` to a new file that only its owner can read (0600 from creation)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
