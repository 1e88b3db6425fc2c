"""The HTTP API providers by kind: each module builds its transport from a provider's settings
and secrets (names as in ``providers.schemas.KINDS``) and a request timeout, and raises
ValueError for settings it cannot use."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tidings.providers.models import ProviderKind
from tidings.transports import azure, generic_http, mailgun, postmark, sendgrid, ses
from tidings.transports.http import HttpTransport

API_TRANSPORTS: dict[
    ProviderKind, Callable[[Mapping[str, Any], Mapping[str, str], float], HttpTransport]
] = {
    ProviderKind.ses: ses.from_provider,
    ProviderKind.sendgrid: sendgrid.from_provider,
    ProviderKind.postmark: postmark.from_provider,
    ProviderKind.mailgun: mailgun.from_provider,
    ProviderKind.azure: azure.from_provider,
    ProviderKind.http: generic_http.from_provider,
}


async def check_api_settings(
    kind: ProviderKind, settings: Mapping[str, Any], secrets: Mapping[str, str]
) -> None:
    """ValueError, saying what is wrong, if the kind's transport cannot be built from these."""
    build = API_TRANSPORTS.get(kind)
    if build is None:
        return
    if kind == ProviderKind.http and "body_template" in settings:
        generic_http.check_body_template(str(settings["body_template"]))
    await build(settings, secrets, 1.0).close()
