"""`python -m nmc` runs the `nmc` command."""

from nmc.cli.main import main

main()
