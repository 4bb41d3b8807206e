"""``python -m petrosa_pipelines.catalog.versions``: store new schema versions, report problems."""

import sys

from petrosa_pipelines.catalog.versions import main

sys.exit(main())
