"""Entry point that runs Xandikos with one principal per top-level folder, behind HTTP Basic.

`xandikos serve` knows one principal (the single user) and refuses Basic authentication without
TLS; `xandikos multi-user` lets each user see only its own tree. A site backend needs neither:
it holds many mailboxes' principals and is read by one service account. This runs Xandikos's
own WSGI-less aiohttp app and storage unchanged, with a backend that treats every top-level
folder `/<name>/` as a principal (the layout Radicale uses: `/<user>/` with calendars below its
`calendars/` home), and Xandikos's own Basic middleware over an htpasswd file ({SHA} entries).

Usage: python -m caslab.xandikos_main --directory D --host H --port P [--htpasswd FILE]
"""

from __future__ import annotations

import argparse
import logging
import os
import posixpath
from typing import Any

from xandikos import web


class PrincipalPerFolderBackend(web.SingleUserFilesystemBackend):  # type: ignore[misc]
    """Every folder directly under the root is a principal, found when it is asked for."""

    def _is_top_level(self, relpath: str) -> bool:
        parts = [p for p in posixpath.normpath(relpath).split("/") if p]
        return len(parts) == 1 and os.path.isdir(os.path.join(self.path, parts[0]))

    def get_resource(self, relpath: str) -> Any:
        if self._is_top_level(relpath):
            self._mark_as_principal(posixpath.normpath(relpath))
        return super().get_resource(relpath)

    def get_principal(self, relpath: str) -> Any:
        if self._is_top_level(relpath):
            self._mark_as_principal(posixpath.normpath(relpath))
        return super().get_principal(relpath)

    def find_principals(self) -> set[str]:
        for name in os.listdir(self.path):
            if not name.startswith(".") and os.path.isdir(os.path.join(self.path, name)):
                self._mark_as_principal("/" + name)
        return set(self._user_principals)

    def iter_principals(self) -> Any:
        self.find_principals()
        return super().iter_principals()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="caslab.xandikos_main")
    parser.add_argument("--directory", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--htpasswd", help="Basic credentials; without it, no authentication")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")

    from aiohttp import web as aioweb
    from xandikos import htpasswd

    root = os.path.abspath(options.directory)
    os.makedirs(root, exist_ok=True)
    backend = PrincipalPerFolderBackend(root)
    app = web.XandikosApp(backend, current_user_principal="/%(REMOTE_USER)s/", strict=True)

    async def handler(request: aioweb.Request) -> aioweb.StreamResponse:
        return await app.aiohttp_handler(request, "/")

    middlewares = []
    if options.htpasswd:
        middlewares.append(web.basic_auth_middleware(htpasswd.HtpasswdFile(options.htpasswd)))
    server = aioweb.Application(middlewares=middlewares)
    server.router.add_route("*", "/{path_info:.*}", handler)
    aioweb.run_app(server, host=options.host, port=options.port, print=None)


if __name__ == "__main__":
    main()
