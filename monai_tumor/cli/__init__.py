"""Command-line interface: parse, call the library, map errors to exit codes."""

__all__: list[str] = []
