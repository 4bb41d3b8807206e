"""Operator tooling, kept out of the data flow: the local stack, backfill launches, the demo,
the ``petrosa`` command line, the Dagster instance files and run-storage maintenance.

Nothing under the data-flow packages (exchanges, ingest, landing, market_data, checks,
analytics, serving, catalog) imports from here; ``definitions.py`` takes the maintenance job.
"""
