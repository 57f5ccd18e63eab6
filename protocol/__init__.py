"""The medhub wire protocol (pure, no I/O).

Importing any part of the package registers every capability's client message
types in :data:`protocol.messages.CLIENT_TYPES` (the imports below), so the
decoder knows them whoever imports it first.
"""

from protocol import chat as chat
from protocol import presence as presence
