"""Command groups of the `sipcore` CLI, discovered by server.cli (each module exposes register())."""
