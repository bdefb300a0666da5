"""Command-line interface: parses arguments, calls one library function, renders the result."""
