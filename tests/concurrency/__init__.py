"""Tests with real threads and injected faults: races between connections, killed backends."""
