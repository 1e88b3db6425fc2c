"""Request and response models for API keys and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from tidings.schemas import ApiModel
from tidings.security.models import Scope


class ApiKeyCreate(ApiModel):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    scope: Scope = Scope.read


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    prefix: str
    scope: Scope
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class IssuedApiKeyOut(ApiKeyOut):
    key: str = Field(description="The full key. It is shown only in this response.")


class AuditEntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str | None
    detail: dict[str, Any] | None
