"""The secure platform (TLS, WS, WSS listeners and test certificates) of tests/secure_sip."""

from tests.secure_sip.conftest import pki, secure  # noqa: F401 - fixtures
