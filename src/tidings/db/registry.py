"""Imports every model module so Base.metadata knows all tables (for migrations and tests)."""

from __future__ import annotations

from sqlalchemy import MetaData


def all_metadata() -> MetaData:
    from tidings.audience import models as _audience  # noqa: F401
    from tidings.campaigns import models as _campaigns  # noqa: F401
    from tidings.db.base import Base
    from tidings.delivery import models as _delivery  # noqa: F401
    from tidings.hooks import models as _hooks  # noqa: F401
    from tidings.promotions import models as _promotions  # noqa: F401
    from tidings.providers import models as _providers  # noqa: F401
    from tidings.security import models as _security  # noqa: F401
    from tidings.tracking import models as _tracking  # noqa: F401

    return Base.metadata
