"""Running a lab until it is told to stop: the summary, the commentary, and the stop.

`run_lab(options)` starts a `Lab` (`caslab.runner`), prints where everything is and commands
to paste (`caslab.summary`), prints a line for each failure a node logs and each breaker
transition once (`caslab.watch`), restarts a part that dies (`caslab.keeper`, or leaves it
down with `--no-restart`), and runs until Ctrl-C, SIGTERM or `--duration`; then it stops every
part.
"""

from __future__ import annotations

import signal
import sys
import time

from caslab.keeper import Keeper, lab_parts, write_parts_file
from caslab.oldserver.process import LegacyServerError
from caslab.radicale import RadicaleError
from caslab.redis import RedisProcessError
from caslab.runner import Lab, LabError, LabOptions
from caslab.summary import print_summary
from caslab.watch import Followed, LogWatcher


def run_lab(options: LabOptions) -> int:
    lab = Lab(options)

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # while starting or running: the finally below stops every part

    def say(line: str) -> None:
        print(line, flush=True)

    # Both signals stop the lab the same way, set explicitly: a process started in the
    # background of a script inherits SIGINT ignored, and Ctrl-C must still stop it.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    watcher: LogWatcher | None = None
    try:
        try:
            manifest = lab.start()
        except (LabError, RadicaleError, RedisProcessError, LegacyServerError, OSError) as exc:
            print(f"cas lab: {exc}", file=sys.stderr)
            return 1
        watcher = LogWatcher([Followed(n.name, n.log) for n in lab.nodes], say)
        parts = lab_parts(lab)
        parts_file = lab.root / "parts.json"
        write_parts_file(parts_file, parts)
        keeper = Keeper(
            parts, say, restart=options.restart,
            on_restart=lambda: write_parts_file(parts_file, parts),
        )  # fmt: skip
        print_summary(manifest, lab.manifest_path, lab.root, state_kept=not lab.temporary)
        watcher.start()
        deadline = None if options.duration is None else time.monotonic() + options.duration
        while deadline is None or time.monotonic() < deadline:
            keeper.check()
            time.sleep(0.2)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if watcher is not None:
            watcher.stop()
        say("cas lab: stopping every part")
        lab.stop()
