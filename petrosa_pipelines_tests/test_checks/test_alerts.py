"""Alerts reach a real local HTTP receiver and a real local SMTP server; repeats are folded."""

import json
import os
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from petrosa_pipelines.checks.settings import AlertSettings, alert_settings
from petrosa_pipelines.market_data.partitions import daily_symbol_partitions
from petrosa_pipelines.settings import SettingError
from sensors.alert_sensor import Alert, build_alert_sensor, fold, send_alert


@pytest.fixture
def http_receiver():
    """A stdlib HTTP server recording every POSTed JSON body, per path."""
    received: list[tuple[str, dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - stdlib name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, json.loads(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


class _SMTPHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP (RFC 5321) for smtplib: EHLO, MAIL, RCPT, DATA, QUIT."""

    def _send(self, line: str) -> None:
        self.wfile.write((line + "\r\n").encode())

    def handle(self):
        self._send("220 localhost test SMTP")
        mail = {"rcpt": []}
        while line := self.rfile.readline():
            cmd = line.decode().strip()
            verb = cmd[:4].upper()
            if verb in ("EHLO", "HELO"):
                self._send("250 localhost")
            elif verb == "MAIL":
                mail["from"] = cmd
                self._send("250 OK")
            elif verb == "RCPT":
                mail["rcpt"].append(cmd)
                self._send("250 OK")
            elif verb == "DATA":
                self._send("354 end with <CRLF>.<CRLF>")
                data = []
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data.append(chunk.decode())
                mail["data"] = "".join(data)
                self.server.messages.append(dict(mail))
                self._send("250 queued")
            elif verb == "QUIT":
                self._send("221 bye")
                return
            else:
                self._send("250 OK")


@pytest.fixture
def smtp_server():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SMTPHandler)
    server.daemon_threads = True
    server.messages = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], server.messages
    server.shutdown()
    server.server_close()


def _alert(fp="check|market_data/candles:candles_complete|2024-05-01|ETHUSDT"):
    return Alert(
        fp,
        "check_failed",
        "check market_data/candles:candles_complete failed",
        "ERROR",
        "market_data/candles:candles_complete",
        "2024-05-01|ETHUSDT",
        "r1",
        {"missing_minutes": 7},
    )


def test_every_sink_delivers(http_receiver, smtp_server):
    url, received = http_receiver
    port, mails = smtp_server
    settings = AlertSettings(
        sinks=("log", "webhook", "slack", "smtp"),
        webhook_url=f"{url}/hook",
        slack_webhook_url=f"{url}/slack",
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_to=("ops@example.org",),
        timeout_s=5,
    )
    assert send_alert(_alert(), settings) == []
    paths = dict(received)
    assert paths["/hook"]["partition"] == "2024-05-01|ETHUSDT"
    assert paths["/hook"]["details"] == {"missing_minutes": 7}
    assert "candles_complete" in paths["/slack"]["text"] and "[ERROR]" in paths["/slack"]["text"]
    assert len(mails) == 1 and "ops@example.org" in mails[0]["rcpt"][0]
    assert "Subject: [petrosa ERROR] check market_data/candles:candles_complete" in mails[0]["data"]


def test_a_dead_sink_does_not_silence_the_others(http_receiver):
    url, received = http_receiver
    settings = AlertSettings(
        sinks=("slack", "webhook"),
        slack_webhook_url="http://127.0.0.1:9/x",
        webhook_url=f"{url}/hook",
        timeout_s=2,
    )
    assert send_alert(_alert(), settings) == ["slack"]
    assert [p for p, _ in received] == ["/hook"]


def test_folding():
    state: dict = {}
    assert fold(_alert(), state, 1000.0, 3600)
    assert not fold(_alert(), state, 1100.0, 3600)
    assert not fold(_alert(), state, 1200.0, 3600)
    assert fold(_alert("other"), state, 1200.0, 3600)
    again = _alert()
    assert fold(again, state, 1000.0 + 3600, 3600) and again.repeats == 2


def test_settings_validate_sinks():
    env = {"PETROSA_ALERT_SINKS": "log,webhook"}
    with pytest.raises(ValueError, match="webhook"):
        alert_settings(env)
    env["PETROSA_ALERT_WEBHOOK_URL"] = "http://127.0.0.1:1/x"
    assert alert_settings(env).sinks == ("log", "webhook")


@dg.asset(key=["market_data", "candles"], partitions_def=daily_symbol_partitions)
def candles(context) -> None:
    """A partition whose check fails for ETHUSDT."""


@dg.asset_check(asset=candles, partitions_def=daily_symbol_partitions, name="candles_complete")
def candles_complete(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    ok = "BTC" in str(context.partition_key)
    return dg.AssetCheckResult(
        passed=ok,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"missing_minutes": 0 if ok else 7},
    )


@pytest.mark.slow  # several seconds: the full suite, not the fast lane
def test_sensor_alerts_once_folds_repeats_and_clears(http_receiver, instance, tmp_path):
    url, received = http_receiver
    clock = [1_000_000.0]
    landing = tmp_path / "landing"
    beat = landing / "binance" / "_heartbeat" / "g1.json"
    beat.parent.mkdir(parents=True)
    beat.write_text("{}")
    os.utime(beat, (clock[0] - 10, clock[0] - 10))
    sensor = build_alert_sensor(
        settings=lambda: AlertSettings(
            sinks=("webhook",),
            webhook_url=f"{url}/hook",
            fold_window_s=600,
            ingest_down_after_s=300,
        ),
        landing_root=lambda: str(landing),
        clock=lambda: clock[0],
        expected_groups=lambda: {"binance/g1"},
    )
    defs = dg.Definitions(assets=[candles], asset_checks=[candles_complete], sensors=[sensor])
    cursor = None

    beat_age = [10.0]

    def tick():
        nonlocal cursor
        os.utime(beat, (clock[0] - beat_age[0], clock[0] - beat_age[0]))
        ctx = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
        sensor(ctx)
        cursor = ctx.cursor

    def run(pk):
        dg.materialize(
            [candles, candles_complete], partition_key=pk, instance=instance, raise_on_error=False
        )

    run("2024-05-01|ETHUSDT")
    run("2024-05-01|BTCUSDT")
    tick()
    assert [b["partition"] for _, b in received] == ["2024-05-01|ETHUSDT"]
    run("2024-05-01|ETHUSDT")  # fails again within the fold window: folded
    clock[0] += 60
    tick()
    assert len(received) == 1
    clock[0] += 600  # window over, still failing: one alert carrying the folded count
    run("2024-05-01|ETHUSDT")
    tick()
    assert len(received) == 2 and received[1][1]["repeats"] == 1
    beat_age[0] = 900  # ingest heartbeat stale: down
    tick()
    assert received[-1][1]["kind"] == "ingest_down"
    assert received[-1][1]["subject"] == "binance/g1"
    tick()
    assert received[-1][1]["kind"] == "ingest_down" and len(received) == 3  # folded


SLACK_TOKEN = "xq7Lw2ZkP9rT4vB8nM3cH6dF"
SLACK_NO_SCHEME = f"hooks.slack.com/services/T0AB12CD3/B0EF45GH6/{SLACK_TOKEN}"


class _Lines:
    """A logger that keeps every line it is given."""

    def __init__(self):
        self.lines: list[str] = []

    def error(self, msg, *args):
        self.lines.append(msg % args if args else msg)

    warning = info = error


def test_a_slack_url_without_scheme_is_refused_up_front_with_the_token_masked():
    """It used to pass the settings and fail at send time, logging
    ``unknown url type: 'hooks.slack.com/services/.../<token>'``."""
    env = {"PETROSA_ALERT_SINKS": "slack", "PETROSA_ALERT_SLACK_WEBHOOK_URL": SLACK_NO_SCHEME}
    with pytest.raises(SettingError, match="PETROSA_ALERT_SLACK_WEBHOOK_URL") as info:
        alert_settings(env)
    assert SLACK_TOKEN not in str(info.value) and "B0EF45GH6" not in str(info.value)
    assert "hooks.slack.com/***" in str(info.value)


@pytest.mark.parametrize(
    "slack_url",
    [
        SLACK_NO_SCHEME,  # fails before any connection
        f"http://127.0.0.1:9/services/T0AB12CD3/B0EF45GH6/{SLACK_TOKEN}",  # connection refused
    ],
)
def test_sink_errors_never_log_the_webhook_token(http_receiver, slack_url, caplog):
    url, received = http_receiver
    settings = AlertSettings(
        sinks=("slack", "webhook"),
        slack_webhook_url=slack_url,
        webhook_url=f"{url}/hook/{SLACK_TOKEN[::-1]}",
        timeout_s=2,
    )
    logger = _Lines()
    assert send_alert(_alert(), settings, logger) == ["slack"]
    assert [p.split("/")[1] for p, _ in received] == ["hook"]  # the other sink still delivered
    [line] = logger.lines
    assert line.startswith("alert sink slack failed")
    assert SLACK_TOKEN not in line and "B0EF45GH6" not in line
    assert SLACK_TOKEN not in caplog.text


def test_a_failing_generic_webhook_never_logs_its_url_secret():
    """A 404 or refused generic webhook: its path (often the secret) stays out of the log."""
    secret = "s3cr3t-path-token-0123456789"
    settings = AlertSettings(sinks=("webhook",), webhook_url=f"http://127.0.0.1:9/{secret}")
    logger = _Lines()
    assert send_alert(_alert(), settings, logger) == ["webhook"]
    assert secret not in logger.lines[0]
