"""Resources pointed at the local exchange, for end-to-end materialisation tests.

The ``local_exchange`` and ``exchange_resource`` fixtures live in the root conftest.
"""

import pytest

from petrosa_pipelines_tests.conftest import LOCAL_SYMBOLS as SYMBOLS  # noqa: F401
from petrosa_pipelines_tests.conftest import LOCAL_TRADES_PER_DAY as TRADES_PER_DAY  # noqa: F401
from resources import LakeIOManager, LandingResource


@pytest.fixture
def resources(tmp_path, exchange_resource):
    return {
        "exchange": exchange_resource,
        "landing": LandingResource(root=str(tmp_path / "landing")),
        "io_manager": LakeIOManager(base_path=str(tmp_path / "lake")),
    }
