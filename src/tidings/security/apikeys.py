"""API keys: shown once, stored only as a SHA-256 hash plus a display prefix, scoped."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.db.types import utcnow
from tidings.errors import NotFound, RuleViolation
from tidings.security.audit import record_audit
from tidings.security.models import ApiKey, Scope

KEY_PREFIX = "tdg_"
PREFIX_LENGTH = len(KEY_PREFIX) + 8
# Touching last_used_at on every request would turn each read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class ApiKeyNotFound(NotFound):
    pass


@dataclass(frozen=True)
class IssuedKey:
    key: ApiKey
    secret: str  # the full key: shown once, never stored


def hash_key(secret: str) -> str:
    # The key carries 256 random bits, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


async def create_api_key(session: AsyncSession, name: str, scope: Scope, actor: str) -> IssuedKey:
    name = name.strip()
    if not name or len(name) > 100:
        raise RuleViolation("key name must be 1 to 100 characters")
    secret = generate_secret()
    key = ApiKey(
        name=name, scope=scope.value, prefix=secret[:PREFIX_LENGTH], key_hash=hash_key(secret)
    )
    session.add(key)
    await session.flush()
    record_audit(
        session, actor, "api_key.create", "api_key", key.id, {"name": name, "scope": scope}
    )
    await session.commit()
    return IssuedKey(key=key, secret=secret)


async def list_api_keys(session: AsyncSession, include_revoked: bool = True) -> list[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.id)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return list((await session.scalars(query)).all())


async def count_keys(session: AsyncSession) -> int:
    """All keys ever made, revoked ones included."""
    return int(await session.scalar(select(func.count()).select_from(ApiKey)) or 0)


async def revoke_api_key(session: AsyncSession, key_ref: str, actor: str) -> ApiKey:
    """Revoke by id or by display prefix. Revoking twice is harmless."""
    key = await _find_key(session, key_ref)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        record_audit(session, actor, "api_key.revoke", "api_key", key.id, {"name": key.name})
        await session.commit()
    return key


async def _find_key(session: AsyncSession, key_ref: str) -> ApiKey:
    if key_ref.isascii() and key_ref.isdigit() and len(key_ref) < 19:
        key = await session.get(ApiKey, int(key_ref))
    else:
        key = await session.scalar(select(ApiKey).where(ApiKey.prefix == key_ref))
    if key is None:
        raise ApiKeyNotFound(f"no API key with id or prefix {key_ref!r}")
    return key


async def authenticate(session: AsyncSession, secret: str) -> ApiKey | None:
    """Return the live key for a presented secret, or None."""
    if not secret.startswith(KEY_PREFIX) or len(secret) > 200:
        return None
    key = await session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(secret)))
    if key is None or key.revoked_at is not None:
        return None
    now = utcnow()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        key.last_used_at = now
        await session.commit()
    return key
