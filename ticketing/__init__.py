"""ticketing: a PostgreSQL data layer for selling event tickets that never oversells."""

__version__ = "0.1.0"
