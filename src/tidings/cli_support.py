"""What every CLI command shares: settings, a runtime for one piece of work, clean errors."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from tidings.config import ConfigurationError, Settings
from tidings.errors import TidingsError
from tidings.logs import configure_logging
from tidings.runtime import Runtime, open_runtime
from tidings.security.crypto import UnknownEncryptionKey

console = Console()
T = TypeVar("T")


@contextmanager
def clean_errors() -> Iterator[None]:
    """Turn the errors a user can act on into one red line and exit status 1, not a traceback."""
    try:
        yield
    except TidingsError as exc:
        fail(exc.detail)
    except ConfigurationError as exc:
        fail(str(exc))
    except ValidationError as exc:
        problems = "; ".join(
            f"TIDINGS_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        fail(f"invalid configuration: {problems}")
    except UnknownEncryptionKey as exc:
        fail(
            f"{exc}. Keep every older key in TIDINGS_ENCRYPTION_KEYS (after the newest) until "
            "`tidings keys rotate-encryption` has finished."
        )


def fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)
    raise typer.Exit(1)


def load_settings(**overrides: object) -> Settings:
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
    configure_logging(settings.log_level, settings.log_format)
    return settings


def run_in_runtime(work: Callable[[Runtime], Awaitable[T]], *, migrate: bool = True) -> T:
    """Open a runtime, run one piece of async work in it, close it."""

    async def main(settings: Settings) -> T:
        runtime = await open_runtime(settings, migrate=migrate)
        try:
            return await work(runtime)
        finally:
            await runtime.close()

    with clean_errors():
        return asyncio.run(main(load_settings()))
    raise AssertionError("unreachable")


def run_until_signalled(
    loop: Callable[[Runtime, asyncio.Event], Awaitable[None]], *, migrate: bool = True
) -> None:
    """Run a long-lived loop (scheduler, workers) until SIGINT or SIGTERM sets its stop event."""

    async def work(runtime: Runtime) -> None:
        stop = asyncio.Event()
        running = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            running.add_signal_handler(signum, stop.set)
        await loop(runtime, stop)

    run_in_runtime(work, migrate=migrate)
