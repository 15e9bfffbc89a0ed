"""The benchmark's own SQL, read once at import from the .sql files beside this module.

The files use the format of ticketing/queries (blocks that start with a
``-- name: <name>`` line), and are read by the same loader.
"""

from __future__ import annotations

from ticketing.queries import load

#: The baselines, the floors' setup, the benchmark's own databases and the
#: reads of the results (baselines.sql).
Q = load("baselines.sql", "ticketing.bench")
#: The design's floors (floors.sql).
FLOORS = load("floors.sql", "ticketing.bench")
