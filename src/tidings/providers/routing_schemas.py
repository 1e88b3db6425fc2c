"""Request and response shapes of /routing-rules: which recipients go to which provider before
load balancing (see tidings.delivery.routing for the order rules apply in)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    PlainValidator,
    WithJsonSchema,
    model_validator,
)

from tidings.providers.schemas import Name
from tidings.schemas import ApiModel

MAX_DOMAINS = 1000
# One DNS label: letters (any script, for internationalized domains), digits, '-' and '_',
# neither first nor last a hyphen.
LABEL = re.compile(r"^(?!-)[\w-]{1,63}(?<!-)$")


def plausible_domain(value: str) -> str:
    """Lower-cased and checked: a recipient's domain as it appears after the '@'."""
    domain = value.strip().lower().rstrip(".")
    if "@" in domain:
        raise ValueError(
            f"{value!r} is an address, not a domain: give the part after '@', like example.com"
        )
    if len(domain) > 253:
        raise ValueError(f"a domain has at most 253 characters; {value[:20]!r}… has {len(domain)}")
    labels = domain.split(".")
    if len(labels) < 2 or not all(LABEL.match(label) for label in labels):
        raise ValueError(
            f"{value!r} is not a domain: dot-separated labels of letters, digits and hyphens, "
            "like example.com"
        )
    return domain


RecipientDomain = Annotated[str, AfterValidator(plausible_domain)]


def distinct(domains: list[str]) -> list[str]:
    return list(dict.fromkeys(domains))


RecipientDomains = Annotated[
    list[RecipientDomain],
    Field(max_length=MAX_DOMAINS, description=f"At most {MAX_DOMAINS}; lower-cased."),
    AfterValidator(distinct),
]
Score = Annotated[
    float,
    Field(ge=0, le=100, allow_inf_nan=False, description="From 0 to 100: at least this score."),
]
Position = Annotated[
    int, Field(ge=0, le=1_000_000, description="Order among rules of the same kind, lowest first.")
]


def provider_ref(value: object) -> int | str:
    # A plain validator: a union would answer `true` or `""` with one error per member.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and 1 <= len(value.strip()) <= 100:
        return value.strip()
    raise ValueError("give a provider's id (a number) or name (1 to 100 characters), or null")


ProviderRef = Annotated[
    int | str,
    PlainValidator(provider_ref),
    WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 100}]}),
]
PROVIDER_HELP = "A provider's id or name; null: the usable one with the best reputation."


class RoutingRuleCreate(ApiModel):
    name: Name
    position: Position = 0
    enabled: bool = True
    recipient_domains: RecipientDomains = Field(default_factory=list)
    min_engagement_score: Score | None = None
    provider: ProviderRef | None = Field(default=None, description=PROVIDER_HELP)


# Fields of RoutingRuleUpdate whose column cannot be empty.
REQUIRED = frozenset({"name", "position", "enabled", "recipient_domains"})


class RoutingRuleUpdate(ApiModel):
    """Fields to change; ``min_engagement_score`` and ``provider`` may be set to null."""

    name: Name | None = None
    position: Position | None = None
    enabled: bool | None = None
    recipient_domains: RecipientDomains | None = None
    min_engagement_score: Score | None = None
    provider: ProviderRef | None = Field(default=None, description=PROVIDER_HELP)

    @model_validator(mode="after")
    def _no_null_for_required(self) -> RoutingRuleUpdate:
        nulled = sorted(n for n in self.model_fields_set & REQUIRED if getattr(self, n) is None)
        if nulled:
            raise ValueError(f"{nulled[0]} cannot be null (leave it out to keep it)")
        return self


class RoutingRuleOut(BaseModel):
    id: int
    name: str
    kind: Literal["domain", "engagement"] = Field(
        description="Domain rules are tried before engagement rules."
    )
    position: int
    enabled: bool
    recipient_domains: list[str]
    min_engagement_score: float | None
    provider_id: int | None
    provider: str | None = Field(description="The provider's name; null: best reputation.")
    created_at: datetime
    updated_at: datetime
