"""Providers: create, change, list, delete, with each kind's settings and secrets checked.

Secrets live in one encrypted JSON object per provider; they are read only to send, and shown
masked (their last four characters) everywhere else.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.db.errors import flush_unique
from tidings.db.ids import get_by_id_or_name
from tidings.errors import Conflict, NotFound, RuleViolation
from tidings.providers.models import Provider, ProviderKind, ProviderState
from tidings.providers.schemas import KINDS, ProviderCreate, ProviderUpdate, stored_plan
from tidings.security.audit import record_audit
from tidings.transports.registry import check_api_settings


class ProviderNotFound(NotFound):
    pass


class DuplicateProvider(Conflict):
    code = "duplicate_provider"


class NotPaused(Conflict):
    code = "not_paused"


async def check_kind(kind: ProviderKind, settings: dict[str, Any], secrets: dict[str, str]) -> None:
    """Refuse settings or secrets the kind does not know, missing required ones, and values
    the kind's transport cannot use (a bad URL, region or key)."""
    spec = KINDS[kind]
    for what, given, required, known in (
        ("setting", settings, spec.settings, spec.all_settings),
        ("credential", secrets, spec.secrets, spec.all_secrets),
    ):
        unknown = sorted(set(given) - set(known))
        if unknown:
            allowed = ", ".join(known) or "none"
            raise RuleViolation(f"{kind} takes no {what} {unknown[0]!r} (allowed: {allowed})")
        missing = [name for name in required if name not in given]
        if missing:
            raise RuleViolation(f"a {kind} provider needs the {what} {missing[0]!r}")
    check_values(kind, settings)
    try:
        await check_api_settings(kind, settings, secrets)
    except ValueError as exc:
        raise RuleViolation(f"{kind} provider: {exc}") from exc


# Settings with a fixed set of values, by kind and name.
CHOICES: dict[tuple[ProviderKind, str], tuple[object, ...]] = {
    (ProviderKind.smtp, "security"): ("starttls", "tls", "none"),
    (ProviderKind.mailgun, "region"): ("us", "eu"),
}


def check_values(kind: ProviderKind, settings: dict[str, Any]) -> None:
    for name, value in settings.items():
        allowed = CHOICES.get((kind, name))
        if allowed is not None and value not in allowed:
            choices = ", ".join(map(str, allowed))
            raise RuleViolation(f"setting {name!r} of a {kind} provider is one of {choices}")
    port = settings.get("port")
    if port is not None and (not isinstance(port, int) or not 1 <= port <= 65535):
        raise RuleViolation("setting 'port' is a number from 1 to 65535")


def secrets_of(provider: Provider) -> dict[str, str]:
    loaded: dict[str, str] = json.loads(provider.credentials or "{}")
    return loaded


def masked(secrets: dict[str, str]) -> dict[str, str]:
    return {
        name: "****" + value[-4:] if len(value) > 8 else "****" for name, value in secrets.items()
    }


def describe(provider: Provider, state: ProviderState | None = None) -> dict[str, Any]:
    """The API's view of a provider: everything but the secrets, which are masked, and
    whether sending through it is paused (from its shared state, if it has any yet)."""
    fields = {c.key: getattr(provider, c.key) for c in Provider.__table__.columns}
    return {
        **fields,
        "credentials": masked(secrets_of(provider)),
        "paused_reason": state.paused_reason if state is not None else None,
        "paused_at": state.paused_at if state is not None else None,
    }


async def states_of(session: AsyncSession, ids: Iterable[int]) -> dict[int, ProviderState]:
    """The shared state rows of these providers, by provider id (missing: never sent yet)."""
    wanted = list(ids)
    if not wanted:
        return {}
    rows = await session.scalars(select(ProviderState).where(ProviderState.provider_id.in_(wanted)))
    return {row.provider_id: row for row in rows}


async def describe_all(
    session: AsyncSession, providers: Sequence[Provider]
) -> list[dict[str, Any]]:
    """``describe`` for many providers, their states read in one query."""
    states = await states_of(session, [p.id for p in providers])
    return [describe(p, states.get(p.id)) for p in providers]


async def describe_one(session: AsyncSession, provider: Provider) -> dict[str, Any]:
    return (await describe_all(session, [provider]))[0]


async def get_provider(session: AsyncSession, ref: str | int) -> Provider:
    """By numeric id or by name."""
    found = await get_by_id_or_name(session, Provider, Provider.name, ref)
    if found is None:
        raise ProviderNotFound(f"no provider {str(ref)!r}")
    return found


async def list_providers(
    session: AsyncSession, *, limit: int, offset: int
) -> tuple[list[Provider], int]:
    total = await session.scalar(select(func.count()).select_from(Provider))
    rows = await session.scalars(
        select(Provider).order_by(Provider.priority, Provider.name).limit(limit).offset(offset)
    )
    return list(rows.all()), int(total or 0)


async def create_provider(session: AsyncSession, data: ProviderCreate, actor: str) -> Provider:
    await check_kind(data.kind, data.settings, data.credentials)
    values = data.model_dump(exclude={"credentials", "warming_plan"})
    provider = Provider(
        **values,
        credentials=json.dumps(data.credentials),
        warming_plan=stored_plan(data.warming_plan),
    )
    session.add(provider)
    await _save(session, provider, actor, "provider.create")
    return provider


async def update_provider(
    session: AsyncSession, ref: str | int, data: ProviderUpdate, actor: str
) -> Provider:
    provider = await get_provider(session, ref)
    changes = data.model_dump(exclude_unset=True)
    if "warming_plan" in changes:
        changes["warming_plan"] = stored_plan(data.warming_plan)
    secrets = secrets_of(provider)
    for name, value in (changes.pop("credentials", None) or {}).items():
        if value is None:
            secrets.pop(name, None)
        else:
            secrets[name] = value
    settings = changes.get("settings", provider.settings)
    await check_kind(ProviderKind(provider.kind), settings, secrets)
    for field, value in changes.items():
        setattr(provider, field, value)
    provider.credentials = json.dumps(secrets)
    await _save(session, provider, actor, "provider.update")
    return provider


async def delete_provider(session: AsyncSession, ref: str | int, actor: str) -> None:
    provider = await get_provider(session, ref)
    await session.delete(provider)
    record_audit(
        session, actor, "provider.delete", "provider", provider.id, {"name": provider.name}
    )
    await session.commit()


async def resume_provider(session: AsyncSession, ref: str | int, actor: str) -> Provider:
    """Let a provider that warming paused (too many complaints) send again."""
    provider = await get_provider(session, ref)
    # Locked like a quota grant locks it, so a grant never sees a half-cleared pause.
    state = await session.scalar(
        select(ProviderState).where(ProviderState.provider_id == provider.id).with_for_update()
    )
    if state is None or state.paused_at is None:
        raise NotPaused(f"provider {provider.name!r} is not paused")
    detail = {
        "name": provider.name,
        "paused_at": state.paused_at.isoformat(),
        "paused_reason": state.paused_reason,
    }
    state.paused_at, state.paused_reason = None, None
    record_audit(session, actor, "provider.resume", "provider", provider.id, detail)
    await session.commit()
    return provider


async def _save(session: AsyncSession, provider: Provider, actor: str, action: str) -> None:
    duplicate = DuplicateProvider(f"a provider named {provider.name!r} exists")
    await flush_unique(session, duplicate, "providers", "name")
    # The audit row names what changed, never a secret.
    record_audit(session, actor, action, "provider", provider.id, {"name": provider.name})
    await session.commit()
