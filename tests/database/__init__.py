"""Tests of the schema itself: migrations, raw SQL against the tables, privileges, the ledger,
inventory slots, plans, the catalog, the invariant checks and ticketing.db."""
