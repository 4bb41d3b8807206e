"""The Dagster UI in a real browser (Debian Chromium driven by playwright)."""
