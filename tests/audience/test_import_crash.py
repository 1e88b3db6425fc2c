"""A 100,000-row import with 1% broken rows, killed with SIGKILL mid-way and run again, ends
with exactly the rows of the file: none lost, none twice, every broken line reported once."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path

from sqlalchemy import select, text

from tests.conftest import subprocess_environment
from tests.live_server import TIDINGS
from tidings.audience.models import ImportJob, Subscriber
from tidings.runtime import Runtime

ROWS = 100_000


def write_file(path: Path) -> set[tuple[str, str, tuple[str, ...], str]]:
    """The CSV, and the (email, name, tags, attributes) every good row must end up as."""
    expected = set()
    with path.open("w") as out:
        out.write("email,name,tags,city\n")
        for i in range(ROWS):
            if i % 100 == 7:
                out.write(f"broken-{i},Broken {i},,Nowhere\n")
                continue
            tags = ("retail", "tech") if i % 3 else ("finance",)
            out.write(f"person{i}@example{i % 13}.com,Person {i},{';'.join(tags)},City{i % 50}\n")
            expected.add(
                (
                    f"person{i}@example{i % 13}.com",
                    f"Person {i}",
                    tags,
                    json.dumps({"city": f"City{i % 50}"}),
                )
            )
    return expected


def run_import(db: Runtime, path: Path) -> subprocess.Popen[bytes]:
    env = subprocess_environment(db)
    return subprocess.Popen(
        [str(TIDINGS), "import", str(path), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def lines_done(db: Runtime) -> int:
    async with db.database.sessions() as session:
        return int(await session.scalar(select(ImportJob.lines_done)) or 0)


async def test_an_import_killed_mid_way_resumes_to_exactly_the_file(
    db: Runtime, tmp_path: Path
) -> None:
    path = tmp_path / "audience.csv"
    expected = write_file(path)
    first = run_import(db, path)
    deadline = time.monotonic() + 300
    while await lines_done(db) < ROWS // 5:
        assert first.poll() is None, "the import finished before it could be killed"
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = await lines_done(db)
    assert 0 < killed_at < ROWS

    second = run_import(db, path)
    _, errors = second.communicate(timeout=600)
    assert second.returncode == 0, errors.decode()[-2000:]

    async with db.database.sessions() as session:
        rows = (
            await session.execute(
                select(Subscriber.email, Subscriber.name, Subscriber.tags, Subscriber.attributes)
            )
        ).all()
        job = await session.scalar(select(ImportJob))
        rejected = (
            await session.execute(text("SELECT line, reason FROM import_rejections ORDER BY line"))
        ).all()
        jobs = await session.scalar(text("SELECT count(*) FROM imports"))
    got = [(e, n, tuple(t), json.dumps(a)) for e, n, t, a in rows]
    assert len(got) == len(set(got)) == len(expected)
    assert set(got) == expected
    assert jobs == 1 and job is not None and job.status == "done"
    assert (job.inserted, job.failed) == (len(expected), ROWS - len(expected))
    broken_lines = [i + 2 for i in range(ROWS) if i % 100 == 7]  # line 1 is the header
    assert [line for line, _ in rejected] == broken_lines
    assert all("@-sign" in reason for _, reason in rejected)
