"""The per-invocation API client, built from the root command's options."""

from __future__ import annotations

import typer

from ferry.cli.client import Api, resolve


def api(ctx: typer.Context) -> Api:
    root = ctx.find_root()
    if not isinstance(root.obj, Api):
        params = root.params
        root.obj = Api(resolve(params.get("url"), params.get("token")))
    return root.obj
