"""Request and response shapes of /providers. What each kind needs is one table (``KINDS``), so
a missing API key or an unknown setting is a 422 that names it, and secrets never come back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import available_timezones

from pydantic import AfterValidator, BaseModel, Field, StringConstraints, model_validator

from tidings.delivery.warming import WarmingPlan
from tidings.providers.models import ProviderKind
from tidings.schemas import ApiModel


@dataclass(frozen=True)
class KindSpec:
    secrets: tuple[str, ...] = ()  # all required
    optional_secrets: tuple[str, ...] = ()
    settings: tuple[str, ...] = ()  # required
    optional_settings: tuple[str, ...] = ()

    @property
    def all_secrets(self) -> tuple[str, ...]:
        return self.secrets + self.optional_secrets

    @property
    def all_settings(self) -> tuple[str, ...]:
        return self.settings + self.optional_settings


KINDS: dict[ProviderKind, KindSpec] = {
    ProviderKind.smtp: KindSpec(
        optional_secrets=("username", "password"),
        settings=("host",),
        optional_settings=("port", "security"),
    ),
    ProviderKind.ses: KindSpec(
        secrets=("access_key_id", "secret_access_key"),
        settings=("region",),
        optional_settings=("configuration_set", "endpoint_url"),
    ),
    ProviderKind.sendgrid: KindSpec(secrets=("api_key",), optional_settings=("base_url",)),
    ProviderKind.postmark: KindSpec(
        secrets=("server_token",), optional_settings=("message_stream", "base_url")
    ),
    ProviderKind.mailgun: KindSpec(
        secrets=("api_key",), settings=("domain",), optional_settings=("region", "base_url")
    ),
    ProviderKind.azure: KindSpec(secrets=("access_key",), settings=("endpoint",)),
    ProviderKind.http: KindSpec(
        optional_secrets=("auth_value",),
        settings=("url",),
        optional_settings=("auth_header", "body_template"),
    ),
    ProviderKind.maildir: KindSpec(),
    ProviderKind.console: KindSpec(),
}

Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=r"^[\w.-]+$"),
]
Domain = Annotated[
    str, StringConstraints(strip_whitespace=True, to_lower=True, min_length=3, max_length=253)
]
Limit = Annotated[int, Field(ge=1, le=100_000_000)]
Secret = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
SettingValue = str | int | bool


def known_timezone(value: str) -> str:
    if value != "UTC" and value not in available_timezones():
        raise ValueError(f"unknown timezone {value!r}; use an IANA name like Europe/Berlin")
    return value


Timezone = Annotated[str, AfterValidator(known_timezone)]
Priority = Annotated[int, Field(ge=0, le=1000, description="Lower is tried first.")]
Weight = Annotated[int, Field(ge=0, le=10_000, description="Share among providers of a priority.")]
Domains = Annotated[list[Domain], Field(max_length=1000)]
PLAN_HELP = (
    "A warming plan: explicit daily `steps`, or a ramp from `start_volume` to `target_volume` "
    "over `days`; `{}` is the default 50 → 3000 over 30 days. null: no warming."
)


def stored_plan(plan: WarmingPlan | None) -> dict[str, Any] | None:
    """A plan as its JSON column holds it: every field spelled out, so a later change of the
    defaults does not move a provider that is already warming."""
    return None if plan is None else plan.model_dump(exclude_none=True)


class ProviderFields(ApiModel):
    enabled: bool = True
    priority: Priority = 0
    weight: Weight = 1
    domains: Domains = Field(default_factory=list)
    settings: dict[str, SettingValue] = Field(default_factory=dict)
    per_second: Limit | None = None
    per_minute: Limit | None = None
    per_hour: Limit | None = None
    per_day: Limit | None = None
    timezone: Timezone = Field(default="UTC", description="Where a day of per_day starts.")
    warming_plan: WarmingPlan | None = Field(default=None, description=PLAN_HELP)


class ProviderCreate(ProviderFields):
    name: Name
    kind: ProviderKind
    credentials: dict[str, Secret] = Field(default_factory=dict)


# Fields of ProviderUpdate whose column cannot be empty.
REQUIRED = frozenset({"name", "enabled", "priority", "weight", "domains", "settings", "timezone"})


class ProviderUpdate(ApiModel):
    """Fields to change. ``credentials`` replaces the secrets it names (null removes one)."""

    name: Name | None = None
    enabled: bool | None = None
    priority: Priority | None = None
    weight: Weight | None = None
    domains: Domains | None = None
    settings: dict[str, SettingValue] | None = None
    credentials: dict[str, Secret | None] | None = None
    per_second: Limit | None = None
    per_minute: Limit | None = None
    per_hour: Limit | None = None
    per_day: Limit | None = None
    timezone: Timezone | None = None
    warming_plan: WarmingPlan | None = Field(default=None, description=PLAN_HELP)

    @model_validator(mode="after")
    def _no_null_for_required(self) -> ProviderUpdate:
        # null clears a limit or the warming plan; for these fields it would be a broken row.
        nulled = sorted(n for n in self.model_fields_set & REQUIRED if getattr(self, n) is None)
        if nulled:
            raise ValueError(f"{nulled[0]} cannot be null (leave it out to keep it)")
        return self


class ProviderOut(BaseModel):
    id: int
    name: str
    kind: str
    enabled: bool
    priority: int
    weight: int
    domains: list[str]
    settings: dict[str, Any]
    credentials: dict[str, str] = Field(description="Secrets, masked: only their last 4 chars.")
    per_second: int | None
    per_minute: int | None
    per_hour: int | None
    per_day: int | None
    timezone: str
    warming_plan: dict[str, Any] | None
    paused_reason: str | None = Field(description="Why sending through it is paused, if it is.")
    paused_at: datetime | None
    created_at: datetime
    updated_at: datetime
