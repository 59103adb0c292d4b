"""Command-line interface: one typer verb group per area; no logic of its own."""
