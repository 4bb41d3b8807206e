"""The MongoDB time-series sink as a Dagster resource.

Wire the URL as a secret: ``MongoSinkResource(url=dg.EnvVar("PETROSA_MONGODB_URL"))``. The
sink's assets (``serving/assets.py``) exist only when that variable is set, so an install
without MongoDB never shows, runs or fails them.
"""

from __future__ import annotations

import dagster as dg
from pydantic import PrivateAttr

from petrosa_pipelines.serving.mongo import MongoSink
from petrosa_pipelines.serving.ports import MONGODB_URL_VAR as URL_VAR
from petrosa_pipelines.settings import check_database_url


class MongoSinkResource(dg.ConfigurableResource):
    """Where the sink writes; collections and indexes are ensured when a run first uses it.
    Implements ``serving.ports.MongoSinkPort``."""

    url: str
    database: str = "petrosa"

    _sink: MongoSink | None = PrivateAttr(default=None)

    def _connect(self, url: str) -> MongoSink:
        """The sink of a checked URL (tests replace this with a fake client)."""
        return MongoSink.from_url(url, self.database)

    def sink(self) -> MongoSink:
        if self._sink is None:
            # checked first: pymongo's URI errors are untyped and may echo the password
            url = check_database_url(URL_VAR, self.url, "mongodb")
            self._sink = self._connect(url)
            self._sink.ensure()
        return self._sink

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._sink is not None:
            self._sink.client.close()
            self._sink = None
