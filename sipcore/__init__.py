"""The SIP stack: messages, transactions, transports, digest authentication, the proxy core."""

from sipcore.speedups import compiled_first

compiled_first(__name__, __path__)
