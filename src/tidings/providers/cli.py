"""`tidings providers ...`: list the sending providers, send a test message through one."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Annotated

import typer
from rich.table import Table

from tidings.cli_support import console, fail, run_in_runtime
from tidings.delivery.mime import MessageContent, MessageHeaders, build_message
from tidings.providers import service
from tidings.providers.models import Provider
from tidings.runtime import Runtime
from tidings.security.crypto import InvalidEmail, parse_email
from tidings.transports.base import Outcome, OutgoingMessage, SendResult
from tidings.transports.factory import provider_transport

providers_app = typer.Typer(help="Sending providers: list them, test one.", no_args_is_help=True)


@providers_app.command("list")
def list_providers() -> None:
    """Every provider with its kind, state, routing and limits (never its secrets)."""

    async def work(runtime: Runtime) -> list[Provider]:
        async with runtime.database.sessions() as session:
            items, _ = await service.list_providers(session, limit=1000, offset=0)
            return items

    table = Table("name", "kind", "enabled", "priority", "weight", "limits", "domains")
    for p in run_in_runtime(work):
        limits = ", ".join(
            f"{getattr(p, f'per_{unit}')}/{unit}"
            for unit in ("second", "minute", "hour", "day")
            if getattr(p, f"per_{unit}") is not None
        )
        table.add_row(
            p.name, p.kind, "yes" if p.enabled else "no", str(p.priority), str(p.weight),
            limits or "-", ", ".join(p.domains) or "any",
        )  # fmt: skip
    console.print(table)


@providers_app.command("test")
def test_provider(
    name: Annotated[str, typer.Argument(help="Provider name or id.")],
    to: Annotated[str, typer.Option("--to", help="Who gets the test message.")],
) -> None:
    """Send one real message through the provider and show what its server answered."""
    try:
        recipient = parse_email(to).address
    except InvalidEmail as exc:
        fail(f"--to: {exc}")

    async def work(runtime: Runtime) -> SendResult:
        async with runtime.database.sessions() as session:
            provider = await service.get_provider(session, name)
        transport = provider_transport(provider, runtime.settings)
        try:
            [result] = await transport.send([test_message(runtime, provider, recipient)])
        finally:
            await transport.close()
        return result

    result = run_in_runtime(work)
    if result.outcome != Outcome.accepted:
        fail(f"{result.outcome.value}: {result.detail}")
    detail = f" ({result.provider_message_id})" if result.provider_message_id else ""
    console.print(f"accepted{detail}: a test message to {recipient} via {name}")


def test_message(runtime: Runtime, provider: Provider, recipient: str) -> OutgoingMessage:
    sender_name, sender = parseaddr(runtime.settings.mail_from)
    now = datetime.now(UTC)
    domain = sender.rpartition("@")[2] or "localhost"
    headers = MessageHeaders(
        from_address=sender,
        from_name=sender_name,
        to_address=recipient,
        subject=f"tidings test message via {provider.name}",
        message_id=f"<test.{int(now.timestamp() * 1000)}.{provider.id}@{domain}>",
        date=now,
    )
    text = f"This message was sent by `tidings providers test {provider.name}`.\n"
    data = build_message(headers, text, None)
    return OutgoingMessage(0, sender, recipient, data, MessageContent(headers, text, None))
