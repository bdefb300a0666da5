"""`python -m fmanetpp_cli` runs the command-line tool."""

from fmanetpp_cli.cli.app import main

if __name__ == "__main__":
    main()
