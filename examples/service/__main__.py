"""`python -m examples.service [--host 127.0.0.1] [--port 8000]`: the service under uvicorn.

The database is DATABASE_URL's (migrated first: `ticketing migrate`).
"""

from __future__ import annotations

import argparse

import uvicorn

from .app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.service", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--database-url", help="default: the DATABASE_URL environment variable")
    args = parser.parse_args()
    uvicorn.run(create_app(args.database_url), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
