"""The server: the adapters that do the I/O around the pure cores (floor 3)."""

from sipcore.speedups import compiled_first

compiled_first(__name__, __path__)
