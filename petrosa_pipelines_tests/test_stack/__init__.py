"""End-to-end tests of the production topology (``petrosa stack``) on loopback."""
