"""Response shapes of /system (seed 002): the instance's health, its providers' figures and
their warming. Read-only reports; times are aware UTC."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

Circuit = Literal["closed", "open", "half_open", "unknown"]
CIRCUIT_HELP = (
    "As the workers seen in the last minute report it: open if any reports open, else "
    "half_open if any does, else closed; unknown when no worker is live."
)


class LatencyOut(BaseModel):
    """Send-call latency percentiles: the upper bound (ms) of the histogram bucket they fall
    in. null: no send call in the window, or slower than the largest bucket (30 s)."""

    calls: int
    p50: float | None
    p95: float | None
    p99: float | None


class ProviderReportOut(BaseModel):
    id: int = Field(description="0: the instance's own transport (TIDINGS_MAIL_TRANSPORT).")
    name: str
    kind: str
    enabled: bool
    priority: int | None = Field(description="null for the instance's own transport.")
    weight: int | None
    paused: bool
    paused_reason: str | None
    paused_at: datetime | None
    circuit: Circuit = Field(description=CIRCUIT_HELP)
    sent: int
    delivered: int
    deferred: int
    failed: int
    bounced_hard: int
    bounced_soft: int
    complained: int
    opened: int
    clicked: int
    error_rate: float = Field(description="(deferred + failed) / attempts.")
    bounce_rate: float = Field(description="(hard + soft bounces) / sent.")
    complaint_rate: float = Field(description="Complaints / sent.")
    latency_ms: LatencyOut
    reputation: float = Field(description="0..100, from the error, bounce and complaint rates.")


class ProvidersReportOut(BaseModel):
    window: str
    since: datetime
    providers: list[ProviderReportOut]


class AdjustmentOut(BaseModel):
    day: date
    plan_day: int
    cap: int
    action: str
    reason: str
    created_at: datetime


class WarmingOut(BaseModel):
    provider_id: int
    provider: str
    plan: dict[str, Any] = Field(description="The plan as stored.")
    plan_length: int | None = Field(description="Days in the plan; null if it cannot be read.")
    phase: Literal["not_started", "warming", "done"]
    plan_day: int | None = Field(description="The plan's current day, from 1.")
    timezone: str
    today: date = Field(description="The provider's local date.")
    cap: int | None = Field(
        description="Today's cap; null until the day's first send decides it, or once done."
    )
    used: int = Field(description="Messages granted today (local day).")
    remaining: int | None
    paused: bool
    paused_reason: str | None
    adjustments: list[AdjustmentOut] = Field(description="Newest first, the last 30.")


class WarmingReportOut(BaseModel):
    providers: list[WarmingOut]


class DatabaseOut(BaseModel):
    dialect: str
    reachable: bool
    latency_ms: float | None


class WorkerOut(BaseModel):
    id: str
    host: str
    pid: int
    started_at: datetime
    seen_at: datetime
    sent: int
    rate_per_second: float
    circuits: dict[str, str]


class QueueOut(BaseModel):
    queued: int = Field(description="Deliveries waiting to be sent (due or later).")
    sending: int = Field(description="Deliveries claimed by a worker.")
    oldest_due_age_seconds: float | None = Field(
        description="How long the oldest due queued delivery has waited; null if none is due."
    )
    runs_sending: int


class ProviderStatusOut(BaseModel):
    id: int
    name: str
    enabled: bool
    paused: bool
    paused_reason: str | None
    circuit: Circuit = Field(description=CIRCUIT_HELP)


class StatusOut(BaseModel):
    status: Literal["ok", "degraded", "down"]
    problems: list[str] = Field(description="Why the status is not ok, one line each.")
    checked_at: datetime
    database: DatabaseOut
    workers: list[WorkerOut] = Field(description="Workers seen in the last minute.")
    queue: QueueOut | None = Field(description="null when the database is down.")
    providers: list[ProviderStatusOut]
