"""``dagster-daemon`` with a 5-second backfill loop instead of 30 s, for tests that wait on it.

Dagster's backfill daemon sleeps ``DEFAULT_DAEMON_INTERVAL_SECONDS`` (30 s) between iterations
and dagster.yaml has no setting for it (``execute_backfill_iteration_loop`` in
https://github.com/dagster-io/dagster/blob/master/python_modules/dagster/dagster/_daemon/backfill.py),
so a backfill whose runs finish in 10 s is submitted and seen complete up to 30 s late, twice.
The tests run the real daemon with only that constant lowered: the same runs, sensors and
queue; only the wait between two looks is shorter. What the tests assert is unchanged.

``python -m petrosa_pipelines_tests.quick_daemon run -w workspace.yaml`` takes dagster-daemon's
arguments.
"""

from __future__ import annotations

import sys

#: seconds between two iterations of the backfill daemon (Dagster's default is 30)
TEST_DAEMON_INTERVAL_S = 5


def quick_daemon_command() -> tuple[str, ...]:
    """The command that starts this daemon, without dagster-daemon's own arguments."""
    return (sys.executable, "-m", "petrosa_pipelines_tests.quick_daemon")


def main() -> int:
    from dagster._daemon import controller
    from dagster._daemon.cli import main as daemon_main

    # a Dagster upgrade that renames the constant must fail here, not silently slow the suite
    if not hasattr(controller, "DEFAULT_DAEMON_INTERVAL_SECONDS"):
        raise SystemExit("dagster._daemon.controller.DEFAULT_DAEMON_INTERVAL_SECONDS is gone")
    controller.DEFAULT_DAEMON_INTERVAL_SECONDS = TEST_DAEMON_INTERVAL_S
    sys.argv[0] = "dagster-daemon"
    return daemon_main()


if __name__ == "__main__":
    sys.exit(main())
