"""Reading a request body under a size limit and a time limit, for every front door."""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from cas.errors import BodyTooLarge, SlowBody

BODY_READ_TIMEOUT_SECONDS = 30.0


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes before buffering them, and a body
    still not received after `BODY_READ_TIMEOUT_SECONDS` (`SlowBody`)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"Request body of {declared} bytes exceeds the limit of {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(BODY_READ_TIMEOUT_SECONDS):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(f"Request body exceeds the limit of {limit} bytes.")
                chunks.append(chunk)
    except TimeoutError:
        raise SlowBody("The request body was not received in time.") from None
    return b"".join(chunks)
