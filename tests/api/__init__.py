"""Tests of the public API: events, allocations, tickets, input bounds, buyer limits."""
