"""One uvicorn worker serving a node's app plus a bare Starlette route, for bench/cache.py.

    python bench/serve_with_bare.py --config SITEMAP --site eu --port P --tls-cert C --tls-key K \\
        --bare-body FILE

`POST /bare` answers with the bytes in FILE (read once, when first asked), so the load tool
can compare the full EWS path with the cheapest possible endpoint on the same server.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cas.app import create_app
from cas.settings import load_settings
from sitemap.load import load_sitemap


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--config", "--site", "--tls-cert", "--tls-key", "--bare-body"):
        parser.add_argument(name, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    sitemap = load_sitemap(args.config)
    app = create_app(
        load_settings(sitemap.settings, environ={}), sitemap, args.site, path=args.config
    )
    body: dict[str, bytes] = {}

    async def bare(request: Request) -> Response:
        await request.body()
        if "b" not in body:
            body["b"] = Path(args.bare_body).read_bytes()  # noqa: ASYNC240 - once, then kept
        return Response(body["b"], media_type="text/xml; charset=utf-8")

    app.router.routes.append(Route("/bare", bare, methods=["POST"]))
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        ssl_certfile=args.tls_cert,
        ssl_keyfile=args.tls_key,
        log_level="warning",
        access_log=False,
        workers=1,
    )


if __name__ == "__main__":
    main()
