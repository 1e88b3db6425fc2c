"""`tidings dkim ...`: DKIM signing keys per sending domain, through the same service as the API.

No command ever prints a private key: the DNS record is all an operator needs to see.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from tidings.cli_support import console, run_in_runtime
from tidings.delivery import dkim_keys
from tidings.delivery.dkim_keys import KeyKind, dns_name, zone_file_value
from tidings.delivery.models import DkimKey
from tidings.runtime import Runtime
from tidings.security.audit import CLI_ACTOR

dkim_app = typer.Typer(
    help="DKIM signing keys per sending domain: create (prints the DNS record), list, "
    "enable, disable, delete.",
    no_args_is_help=True,
)
Domain = Annotated[str, typer.Argument(help="Sending domain, e.g. news.example.com.")]
Selector = Annotated[str, typer.Option(help="DKIM selector, e.g. s1 or mail-2026.")]


def _print_plain(text: str) -> None:
    """Print copy-paste text as it is: no markup, highlighting or wrapping inside the record."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


@dkim_app.command("create")
def create(
    domain: Domain,
    selector: Selector,
    algorithm: Annotated[
        KeyKind, typer.Option(help="rsa (2048 bits, verified everywhere) or ed25519.")
    ] = "rsa",
) -> None:
    """Create a signing key and print the DNS TXT record to publish for it."""

    async def work(runtime: Runtime) -> DkimKey:
        async with runtime.database.sessions() as session:
            return await dkim_keys.create_dkim_key(
                session, domain, selector, algorithm, actor=CLI_ACTOR
            )

    key = run_in_runtime(work)
    name = dns_name(key)
    console.print(f"created DKIM key {key.selector} for {key.domain} ({key.algorithm})")
    console.print("DNS name (TXT record):")
    _print_plain(f"  {name}")
    console.print("TXT value:")
    _print_plain(f"  {key.dns_record}")
    console.print("zone file:")
    _print_plain(f"  {name}. IN TXT {zone_file_value(key.dns_record)}")
    console.print(
        f"Publish this record before sending from {key.domain}: runs started from now on sign "
        "with this key, and receivers fail signatures they cannot look up. (`tidings dkim "
        "disable` holds the key back until the record is live.)",
        soft_wrap=True,
    )


@dkim_app.command("list")
def list_keys() -> None:
    """List the keys with their DNS names (never the private keys)."""

    async def work(runtime: Runtime) -> list[DkimKey]:
        async with runtime.database.sessions() as session:
            return await dkim_keys.list_dkim_keys(session)

    keys = run_in_runtime(work)
    table = Table("domain", "selector", "algorithm", "active", "created (UTC)", "DNS name")
    for key in keys:
        table.add_row(
            key.domain,
            key.selector,
            key.algorithm,
            "yes" if key.active else "no",
            f"{key.created_at:%Y-%m-%d %H:%M}",
            dns_name(key),
        )
    console.print(table)
    console.print(f"{len(keys)} DKIM keys")


@dkim_app.command("delete")
def delete(domain: Domain, selector: Selector) -> None:
    """Delete a key for good (keep its DNS record until mail signed with it has arrived)."""

    async def work(runtime: Runtime) -> DkimKey:
        async with runtime.database.sessions() as session:
            return await dkim_keys.delete_dkim_key(session, domain, selector, CLI_ACTOR)

    key = run_in_runtime(work)
    console.print(f"deleted DKIM key {key.selector} of {key.domain}")


def _active_command(name: str, active: bool, summary: str) -> None:
    def change(domain: Domain, selector: Selector) -> None:
        async def work(runtime: Runtime) -> DkimKey:
            async with runtime.database.sessions() as session:
                return await dkim_keys.set_dkim_key_active(
                    session, domain, selector, active, CLI_ACTOR
                )

        key = run_in_runtime(work)
        state = "signs from the next run on" if key.active else "no longer signs"
        console.print(f"DKIM key {key.selector} of {key.domain} {state}")

    change.__doc__ = summary
    dkim_app.command(name)(change)


_active_command("enable", True, "Sign with a key again (from the next run on).")
_active_command("disable", False, "Stop signing with a key (from the next run on); it is kept.")
