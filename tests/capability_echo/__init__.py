"""A small capability of the test suite: proof that a capability is one package plus one line.

It declares one request (``echo.say``), one one-way message (``echo.note``)
and one stream kind (``echo``), uses a node channel and the user inboxes, and
has a CLI command and a health check. ``tests/server/test_capability.py``
adds it to the composition list with one line and uses it over a real socket.
"""
