"""Alerts on failed asset checks and on an ingest that stays down (open-source Dagster has no
alerts on check failures; Dagster+ alert policies do, so this is ours).

The sensor reads new check executions per check key from the instance (sqlite and PostgreSQL
alike, see petrosa_pipelines/checks/records.py) and the ingest's heartbeat files in the
landing zone, then sends each alert to the sinks named in the settings: log, a JSON webhook,
a Slack-compatible webhook, SMTP e-mail. The same failure (check + partition, or ingest group)
alerts once per fold window; repeats are counted and reported with the next alert; a pass clears it.
"""

from __future__ import annotations

import json
import logging
import os
import smtplib
import time
import urllib.request
from collections.abc import Callable, Collection, Iterable, MutableMapping, Sequence
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dagster as dg

from petrosa_pipelines.checks.records import CheckRecord, new_check_records
from petrosa_pipelines.checks.settings import AlertSettings, alert_settings
from petrosa_pipelines.live.quality import publish_alerts
from petrosa_pipelines.settings import check_url, redact

log = logging.getLogger(__name__)
_SEVERITY_RANK = {"WARN": 0, "ERROR": 1}
#: keys of check metadata worth repeating in an alert
_SUMMARY_KEYS = ("offending", "checked", "missing_minutes", "missing_ids", "score", "lag_s", "note")


@dataclass
class Alert:
    """One thing an operator should look at."""

    fingerprint: str
    kind: str  # check_failed | ingest_down
    title: str
    severity: str
    subject: str
    partition: str | None = None
    run_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    #: how many identical alerts were folded into this one since the last one sent
    repeats: int = 0

    def text(self) -> str:
        extra = f" (+{self.repeats} repeats folded)" if self.repeats else ""
        where = f" partition {self.partition}" if self.partition else ""
        facts = ", ".join(f"{k}={v}" for k, v in self.details.items())
        return f"[{self.severity}] {self.title}{where}{extra}" + (f": {facts}" if facts else "")


# ------------------------------------------------------------------------------------------ sinks
def _post_json(url: str, body: dict[str, Any], timeout: float) -> None:
    req = urllib.request.Request(  # noqa: S310 - the URL is an operator setting
        url,
        data=json.dumps(body, default=str).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
        if resp.status >= 300:
            raise RuntimeError(f"webhook answered {resp.status}")


def send_smtp(alert: Alert, settings: AlertSettings) -> None:
    """One plain-text e-mail per alert; the password comes from the environment when sending."""
    msg = EmailMessage()
    msg["Subject"] = f"[petrosa {alert.severity}] {alert.title}"
    msg["From"] = settings.smtp_from
    msg["To"] = ", ".join(settings.smtp_to)
    msg.set_content(alert.text() + "\n\n" + json.dumps(asdict(alert), indent=2, default=str))
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.timeout_s) as smtp:
        if settings.smtp_starttls:
            smtp.starttls()
        if settings.smtp_user:
            smtp.login(settings.smtp_user, os.environ.get(settings.smtp_password_env, ""))
        smtp.send_message(msg)


def sink_secrets(settings: AlertSettings) -> list[str]:
    """What must never reach a log line: webhook URLs (the path is the token) and the SMTP
    password."""
    values = [
        settings.webhook_url,
        settings.slack_webhook_url,
        os.environ.get(settings.smtp_password_env),
    ]
    return [v for v in values if v]


_SINK_URLS = {
    "webhook": ("PETROSA_ALERT_WEBHOOK_URL", "webhook_url"),
    "slack": ("PETROSA_ALERT_SLACK_WEBHOOK_URL", "slack_webhook_url"),
}


def _sink_url(sink: str, settings: AlertSettings) -> str:
    """The sink's URL, checked before use (settings built in code skip ``alert_settings``)."""
    var, attr = _SINK_URLS[sink]
    return check_url(var, getattr(settings, attr) or "", ("http", "https"), secret=True)


def send_alert(alert: Alert, settings: AlertSettings, logger: Any = log) -> list[str]:
    """Send to every configured sink; returns the sinks that failed (each failure is logged,
    with every sink secret redacted: libraries echo the URL they failed on)."""
    failed = []
    for sink in settings.sinks:
        try:
            if sink == "log":
                (logger.error if alert.severity == "ERROR" else logger.warning)(alert.text())
            elif sink == "webhook":
                _post_json(_sink_url(sink, settings), asdict(alert), settings.timeout_s)
            elif sink == "slack":
                _post_json(_sink_url(sink, settings), {"text": alert.text()}, settings.timeout_s)
            elif sink == "smtp":
                send_smtp(alert, settings)
        except Exception as exc:  # noqa: BLE001 - one dead sink must not silence the others
            failed.append(sink)
            message = f"alert sink {sink} failed: {type(exc).__name__}: {exc}"
            logger.error(redact(message, sink_secrets(settings)))
    return failed


# ---------------------------------------------------------------------------------------- folding
def fold(alert: Alert, state: MutableMapping[str, dict], now: float, window_s: int) -> bool:
    """True when ``alert`` should be sent now; otherwise it is counted as a repeat.

    The first occurrence is sent; identical ones within ``window_s`` of the last sent are
    folded; the first after the window is sent with the folded count.
    """
    entry = state.get(alert.fingerprint)
    if entry is None or now - entry["last_sent"] >= window_s:
        alert.repeats = entry["suppressed"] if entry else 0
        state[alert.fingerprint] = {"last_sent": now, "suppressed": 0}
        return True
    entry["suppressed"] += 1
    return False


def clear(fingerprint: str, state: MutableMapping[str, dict]) -> None:
    """The failure is over: the next one alerts at once."""
    state.pop(fingerprint, None)


# -------------------------------------------------------------------------------------- detectors
def check_alerts(
    records: Iterable[CheckRecord], min_severity: str
) -> tuple[list[Alert], list[str]]:
    """(alerts for failed executions, fingerprints of passed ones)."""
    alerts, passed = [], []
    floor = _SEVERITY_RANK[min_severity]
    for r in records:
        fp = f"check|{r.key_string}|{r.partition or ''}"
        if r.passed:
            passed.append(fp)
            continue
        severity = r.severity or "ERROR"  # EXECUTION_FAILED has no evaluation: the check crashed
        if _SEVERITY_RANK.get(severity, 1) < floor:
            continue
        details = {k: r.metadata[k] for k in _SUMMARY_KEYS if k in r.metadata}
        first = r.metadata.get("first_offending")
        if first:
            details["first_offending"] = first[:3] if isinstance(first, list) else first
        if r.passed is None:
            details["error"] = "the check itself failed to execute"
        alerts.append(
            Alert(
                fp,
                "check_failed",
                f"check {r.key_string} failed",
                severity,
                r.key_string,
                r.partition,
                r.run_id,
                details,
            )
        )
    return alerts, passed


def heartbeat_ages(landing_root: str | os.PathLike[str], now: float) -> dict[str, float]:
    """Age in seconds of each ingest group's heartbeat file (``<root>/<exchange>/_heartbeat``)."""
    out = {}
    for path in Path(landing_root).glob("*/_heartbeat/*.json"):
        exchange = path.parent.parent.name
        out[f"{exchange}/{path.stem}"] = now - path.stat().st_mtime
    return out


def ingest_alerts(
    ages: dict[str, float], down_after_s: int, expected: Collection[str] | None = None
) -> tuple[list[Alert], list[str]]:
    """Down alerts for stale heartbeats of the ``expected`` groups (``exchange/name``).

    A heartbeat left by a group that is not configured to run (the demo's short ingest, a
    retired group) says nothing about liveness: judging it would raise a false alarm forever.
    """
    alerts, healthy = [], []
    for group, age in sorted(ages.items()):
        if expected is not None and group not in expected:
            continue
        fp = f"ingest_down|{group}"
        if age <= down_after_s:
            healthy.append(fp)
            continue
        alerts.append(
            Alert(
                fp,
                "ingest_down",
                f"ingest {group} is down",
                "ERROR",
                group,
                details={"heartbeat_age_s": round(age, 1), "down_after_s": down_after_s},
            )
        )
    return alerts, healthy


def tick_summary(sent: Sequence[Alert], folded: int, cleared: int, shown: int = 5) -> str:
    """What one tick did, in words: Dagster lists a tick that requests no run as "skipped", so
    this line is what the Automation page shows of the sensor's work."""
    if not sent and not folded:
        return "no new check failures; ingest groups healthy" + (
            f" ({cleared} cleared)" if cleared else ""
        )
    parts = []
    if sent:
        titles = [a.title + (f" ({a.partition})" if a.partition else "") for a in sent[:shown]]
        more = f" and {len(sent) - shown} more" if len(sent) > shown else ""
        parts.append(f"sent {len(sent)}: " + "; ".join(titles) + more)
    if folded:
        parts.append(f"{folded} repeat(s) folded")
    if cleared:
        parts.append(f"{cleared} cleared")
    return ", ".join(parts)


def _landing_root() -> str:
    from petrosa_pipelines.settings import from_env

    return from_env().landing_path


def _expected_groups() -> set[str]:
    """``exchange/name`` of every enabled stream group: the ones the supervisor keeps alive."""
    from sensors.ingest_supervisor import groups_from_env

    return {f"{g.exchange}/{g.name}" for g in groups_from_env() if g.enabled}


def build_alert_sensor(
    settings: Callable[[], AlertSettings] = alert_settings,
    landing_root: Callable[[], str | None] = _landing_root,
    clock: Callable[[], float] = time.time,
    expected_groups: Callable[[], Collection[str] | None] = _expected_groups,
    name: str = "check_failure_alert_sensor",
    minimum_interval_seconds: int = 30,
) -> dg.SensorDefinition:
    """The alert sensor; the factory arguments exist so tests can inject settings and a clock."""

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Alert (log / webhook / Slack / e-mail) on failed checks and a dead ingest.",
    )
    def _alert_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        cfg = settings()
        now = clock()
        cursor = json.loads(context.cursor) if context.cursor else {}
        seen, folds = cursor.setdefault("checks", {}), cursor.setdefault("fold", {})
        keys = sorted(context.repository_def.asset_graph.asset_check_keys, key=str)
        alerts, cleared = check_alerts(
            new_check_records(context.instance, keys, seen), cfg.min_severity
        )
        root = landing_root()
        if root:
            more, healthy = ingest_alerts(
                heartbeat_ages(root, now), cfg.ingest_down_after_s, expected_groups()
            )
            alerts += more
            cleared += healthy
        for fp in cleared:
            clear(fp, folds)
        sent: list[Alert] = []
        folded = 0
        for alert in alerts:
            if not fold(alert, folds, now, cfg.fold_window_s):
                folded += 1
                continue
            send_alert(alert, cfg, context.log)
            sent.append(alert)
        # forget folds of failures that have been quiet for a whole window
        for fp in [fp for fp, e in folds.items() if now - e["last_sent"] > 2 * cfg.fold_window_s]:
            folds.pop(fp)
        publish_alerts(sent)  # on NATS too (docs/live.md); never raises
        context.update_cursor(json.dumps(cursor))
        return dg.SkipReason(tick_summary(sent, folded, len(cleared)))

    return _alert_sensor


check_failure_alert_sensor = build_alert_sensor()

__all__ = [
    "Alert",
    "build_alert_sensor",
    "check_alerts",
    "check_failure_alert_sensor",
    "fold",
    "ingest_alerts",
    "send_alert",
]
