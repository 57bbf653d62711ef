"""`python -m sitemap`: the same as the `sitemap` command."""

from __future__ import annotations

from sitemap.cli import main

raise SystemExit(main())
