"""Tests of the ticketing data layer, all against a real PostgreSQL server."""
