"""Call signalling: the ``calls`` capability (see :mod:`server.calls.service`, docs/calls.md)."""
