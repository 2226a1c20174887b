"""Fixtures of the Pulumi program tests; the harness itself is in pulumi_harness.py."""

from pulumi_harness import example_fleet, example_runs, fleet_copy  # noqa: F401 - pytest fixtures
