"""``python -m petrosa_pipelines.local_exchange serve ...``"""

import sys

from petrosa_pipelines.local_exchange.server import main

if __name__ == "__main__":
    sys.exit(main())
