"""ICE servers for call parties: STUN/TURN URLs from config, TURN credentials per user.

TURN credentials follow coturn's shared-secret scheme (``use-auth-secret`` with
``static-auth-secret``, the "TURN REST API" draft): the username is
``"<expiry unix seconds>:<user id>"`` and the password is
``base64(HMAC-SHA1(secret, username))``. The TURN server recomputes the
password from the username with the same secret and refuses an expired
username, so the hub never shares anything with it but the secret, and a
credential is useless after its expiry (``calls_turn_ttl_s``, 1 h by default).

Pure: no I/O. Never log what this returns.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any


def turn_credentials(secret: str, user_id: str, now_s: float, ttl_s: float) -> tuple[str, str]:
    """``(username, password)`` for ``user_id``, valid until ``now_s + ttl_s``.

    ``secret`` is used as its UTF-8 bytes (what coturn's ``static-auth-secret``
    holds). Raises ValueError for an empty secret or a non-positive TTL.
    """
    if not secret:
        raise ValueError("secret_turn is empty")
    if ttl_s <= 0:
        raise ValueError("ttl_s must be > 0")
    username = f"{int(now_s + ttl_s)}:{user_id}"
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def ice_servers(
    stun_urls: list[str],
    turn_urls: list[str],
    secret: str,
    user_id: str,
    now_s: float,
    ttl_s: float,
) -> list[dict[str, Any]]:
    """The ``iceServers`` list (``RTCIceServer`` dicts) to hand to ``user_id``.

    STUN URLs need no credential; TURN URLs share one minted credential.
    Empty lists give an empty list (peers then use host candidates only).
    """
    out: list[dict[str, Any]] = []
    if stun_urls:
        out.append({"urls": list(stun_urls)})
    if turn_urls:
        username, password = turn_credentials(secret, user_id, now_s, ttl_s)
        out.append({"urls": list(turn_urls), "username": username, "credential": password})
    return out
