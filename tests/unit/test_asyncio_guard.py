"""The guard against abandoned tasks fails a test that leaves one, and only such a test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROGRAM = """
import asyncio


async def test_abandons_a_failing_task():
    async def fails():
        raise RuntimeError("nobody reads this")

    task = asyncio.get_running_loop().create_task(fails())
    await asyncio.sleep(0.01)
    del task  # ended with an exception, never awaited


async def test_awaits_its_task():
    async def fails():
        raise RuntimeError("read below")

    task = asyncio.get_running_loop().create_task(fails())
    await asyncio.gather(task, return_exceptions=True)
"""


def test_a_test_that_abandons_a_failing_task_fails(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(PROGRAM)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.support.asyncio_guard",
         "-p", "no:cacheprovider", "--rootdir", str(tmp_path), "-o", "asyncio_mode=auto",
         "-o", "asyncio_default_fixture_loop_scope=function",
         str(tmp_path / "test_inner.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "2 passed, 1 error" in done.stdout  # failed at its teardown
    assert "ERROR" in done.stdout and "test_abandons_a_failing_task" in done.stdout
    assert "Task exception was never retrieved" in done.stdout
    assert "nobody reads this" in done.stdout
