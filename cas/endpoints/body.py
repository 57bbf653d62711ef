"""Reading a request body under a size limit and a time limit, for every front door.

The time limit is the node's `http_body_timeout_seconds` (each door is given it); the uvicorn
protocol (`cas.connections`) bounds the time to the end of the headers."""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from cas.errors import BodyTooLarge, SlowBody

BODY_READ_TIMEOUT_SECONDS = 30.0


async def read_body(
    request: Request, limit: int, timeout_seconds: float = BODY_READ_TIMEOUT_SECONDS
) -> bytes:
    """The request body, refusing more than `limit` bytes before buffering them, and a body
    still not received after `timeout_seconds` (`SlowBody`)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"Request body of {declared} bytes exceeds the limit of {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(f"Request body exceeds the limit of {limit} bytes.")
                chunks.append(chunk)
    except TimeoutError:
        raise SlowBody("The request body was not received in time.") from None
    return b"".join(chunks)
