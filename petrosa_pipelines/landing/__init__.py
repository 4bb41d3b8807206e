"""The landing zone: raw websocket frames landed durably, read back as records and frames.

``LandingWriter`` (one per stream group, used by the ingest) writes; ``LandingStore`` reads
(used by the partitioned assets, the sensors and anyone who wants today's data).
"""

from petrosa_pipelines.landing.records import DeadLetter, GapRecord
from petrosa_pipelines.landing.segments import GroupLockedError
from petrosa_pipelines.landing.store import LandingStore, record_time
from petrosa_pipelines.landing.writer import LandingWriter, WriterConfig

__all__ = [
    "DeadLetter",
    "GapRecord",
    "GroupLockedError",
    "LandingStore",
    "LandingWriter",
    "WriterConfig",
    "record_time",
]
