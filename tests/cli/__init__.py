"""Tests of the `ticketing` command, the benchmark on a tiny configuration, and the wheel."""
