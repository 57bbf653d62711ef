"""Entry point that runs Radicale with a listen backlog fit for parallel readers.

Radicale's built-in server answers HTTP/1.0, so every read is a new connection, and it keeps
socketserver's listen backlog of 5. A node reading many mailboxes at once then overflows the
accept queue; Linux drops the extra SYNs and the client waits a whole second for the
retransmit. Raising the backlog before Radicale binds removes that stall; nothing else changes.
"""

from __future__ import annotations

import socketserver
import sys

LISTEN_BACKLOG = 128


def main() -> None:
    socketserver.TCPServer.request_queue_size = LISTEN_BACKLOG
    from radicale.__main__ import run

    sys.argv[0] = "radicale"
    run()


if __name__ == "__main__":
    main()
