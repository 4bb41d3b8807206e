"""The shared stack for the end-to-end tests (see ``harness``)."""

import pytest

from petrosa_pipelines.tooling.stack import Stack
from petrosa_pipelines_tests.test_stack.harness import SHARED


@pytest.fixture(scope="session")
def stack(tmp_path_factory, postgres_server_url) -> Stack:
    running = SHARED.acquire(tmp_path_factory.mktemp("stack"), postgres_server_url)
    yield running
    SHARED.release()
