"""Talking to a Dagster webserver over GraphQL: the code location's names and one POST.

Shared by the stack (which starts the webserver) and the backfill launcher (which drives it),
so neither imports the other.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

LOCATION_NAME = "petrosa_pipelines"
REPOSITORY_NAME = "__repository__"


class StackError(RuntimeError):
    """A part of the stack did not start or answer; the message names it and shows its log."""


def graphql(url: str, query: str, variables: Mapping[str, Any] | None = None, timeout=60.0) -> dict:
    """POST one GraphQL document; returns ``data`` or raises with the server's errors."""
    body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
    req = urllib.request.Request(  # noqa: S310 - loopback URLs
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            payload = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise StackError(f"GraphQL {url}: HTTP {exc.code}: {exc.read()[:2000]!r}") from exc
    if payload.get("errors"):
        raise StackError(f"GraphQL {url}: {payload['errors']}")
    return payload["data"]
