"""The registrar: REGISTER decided as a pure core (``Registrar.decide``) and its lanes (floor 2)."""

from sipcore.speedups import compiled_first

compiled_first(__name__, __path__)
