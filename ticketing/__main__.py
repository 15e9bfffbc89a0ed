"""`python -m ticketing`: the same as the `ticketing` command."""

from ticketing.cli import main

main()
