"""The lab's keeper: a part that dies is reported in one line and restarted, or left down."""

from __future__ import annotations

from pathlib import Path

from caslab.keeper import MAX_RESTARTS, Keeper, LabPart, ended


class Process:
    """A part's process as the keeper sees it: running, or ended with a status."""

    def __init__(self) -> None:
        self.pid, self.code, self.starts = 100, None, 0

    def restart(self) -> None:
        self.pid, self.code, self.starts = self.pid + 1, None, self.starts + 1


def part(process: Process, name: str = "node cas-eu-1") -> LabPart:
    return LabPart(
        name, "https://127.0.0.1:8443", Path("/lab/logs/cas-eu-1.log"),
        pid=lambda: process.pid, returncode=lambda: process.code, restart=process.restart,
    )  # fmt: skip


def test_a_killed_part_is_reported_once_and_restarted() -> None:
    process, said = Process(), []
    keeper = Keeper([part(process)], said.append, clock=lambda: 0.0)
    keeper.check()
    assert said == []
    process.code = -9
    keeper.check()
    keeper.check()
    assert said == [
        "cas lab: node cas-eu-1 (https://127.0.0.1:8443) killed by SIGKILL; restarted it on "
        "the same port (pid 101); log: /lab/logs/cas-eu-1.log"
    ]
    assert process.starts == 1


def test_with_no_restart_a_dead_part_is_left_down_and_said_once() -> None:
    process, said = Process(), []
    keeper = Keeper([part(process)], said.append, restart=False)
    process.code = 1
    for _ in range(3):
        keeper.check()
    assert said == [
        "cas lab: node cas-eu-1 (https://127.0.0.1:8443) exited with status 1; left down "
        "(--no-restart); log: /lab/logs/cas-eu-1.log"
    ]
    assert process.starts == 0


def test_a_part_that_keeps_dying_is_left_down_after_a_few_restarts() -> None:
    process, said = Process(), []
    keeper = Keeper([part(process)], said.append, clock=lambda: 0.0)
    for _ in range(MAX_RESTARTS + 3):
        process.code = 1
        keeper.check()
    assert process.starts == MAX_RESTARTS
    assert said[-1].endswith(
        f"again: restarted {MAX_RESTARTS} times in 60s; left down; log: /lab/logs/cas-eu-1.log"
    )
    assert len(said) == MAX_RESTARTS + 1


def test_a_part_that_cannot_start_again_is_left_down_and_the_rest_go_on() -> None:
    broken, healthy, said = Process(), Process(), []

    def refuse() -> None:
        raise RuntimeError("port 5232 in use")

    parts = [part(broken, "Radicale of site eu"), part(healthy)]
    parts[0].restart = refuse
    keeper = Keeper(parts, said.append)
    broken.code, healthy.code = -15, -9
    keeper.check()
    assert said[0].startswith("cas lab: Radicale of site eu (https://127.0.0.1:8443) killed by ")
    assert "could not restart it (port 5232 in use); left down" in said[0]
    assert said[1].startswith("cas lab: node cas-eu-1") and healthy.starts == 1


def test_how_a_process_ended_in_words() -> None:
    assert ended(-15) == "killed by SIGTERM"
    assert ended(3) == "exited with status 3"
