"""`tidings worker`: delivery workers alone, as one or several processes."""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Sequence
from typing import Annotated

import typer

from tidings.cli_support import console, run_in_runtime, run_until_signalled
from tidings.delivery.runner import run_worker
from tidings.runtime import Runtime


def worker(
    concurrency: Annotated[
        int,
        typer.Option(min=1, max=64, help="Worker processes (one per core uses the machine fully)."),
    ] = 1,
) -> None:
    """Run only delivery workers: any number, on any hosts, never sending a recipient twice."""
    if concurrency == 1:
        console.print("delivery worker running; Ctrl-C or SIGTERM stops it after its batch")
        run_until_signalled(run_worker)
        return
    run_in_runtime(_nothing)  # apply migrations once, before the processes start
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker_process, daemon=False) for _ in range(concurrency)]
    for process in processes:
        process.start()
    console.print(f"{concurrency} delivery worker processes running; Ctrl-C or SIGTERM stops them")
    signal.signal(signal.SIGTERM, lambda *_: _stop_all(processes))
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:  # the terminal sent SIGINT to every process: they are stopping
        for process in processes:
            process.join()


def _worker_process() -> None:
    run_until_signalled(run_worker, migrate=False)


async def _nothing(runtime: Runtime) -> None:
    return None


def _stop_all(processes: Sequence[multiprocessing.process.BaseProcess]) -> None:
    for process in processes:
        if process.pid is not None and process.is_alive():
            process.terminate()  # SIGTERM: each finishes its batch
