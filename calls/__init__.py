"""Calls: the call model and the sans-IO call controller (floor 2, beside ``registrar/``).

It imports only ``sipcore/``, ``routing/`` and the rating types; only ``server/`` imports it. Objects
here take events with ``now`` and return actions; the adapter in ``server/`` does the I/O.
"""

from sipcore.speedups import compiled_first

compiled_first(__name__, __path__)
