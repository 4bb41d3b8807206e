"""Live outputs: clean records on NATS JetStream, the latest state in Redis (docs/live.md).

``LiveOutputs`` is what the ingest engine feeds (``ingest/sink.py``); ``publish_quality`` what
checks, the health asset and the alert sensor call; ``latest`` (re-exported by
``petrosa_pipelines.api``) what dashboards and notebooks read.
"""

from petrosa_pipelines.live.publisher import LiveOutputs, ensure_stream
from petrosa_pipelines.live.quality import (
    QUALITY_STATS,
    QualityEvent,
    alert_event,
    check_events,
    health_events,
    publish_alerts,
    publish_check_results,
    publish_health,
    publish_quality,
)
from petrosa_pipelines.live.subjects import (
    SubjectError,
    data_subject,
    quality_subject,
    schema_for_subject,
    subject_schemas,
)

__all__ = [
    "QUALITY_STATS",
    "LiveOutputs",
    "QualityEvent",
    "SubjectError",
    "alert_event",
    "check_events",
    "data_subject",
    "ensure_stream",
    "health_events",
    "publish_alerts",
    "publish_check_results",
    "publish_health",
    "publish_quality",
    "quality_subject",
    "schema_for_subject",
    "subject_schemas",
]
