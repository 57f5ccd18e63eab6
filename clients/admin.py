"""The administration calls of the accounts API, for ``medhub-chat admin`` and scripts.

Every call needs the bearer session of an organisation's admin (or a
superadmin; a practitioner may grant and revoke their own delegations) and
raises only :mod:`clients.errors` exceptions: :class:`ApiError` when the API
refuses (``forbidden``; ``not_found`` also for an id of another organisation;
``conflict``; ``reauth_required``), :class:`SessionEndedError` when the session
has ended, :class:`TransportError` when the API cannot be reached.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from clients.accounts import call


def _q(value: str) -> str:
    """An id as one path segment (whatever a user typed, it stays in its segment)."""
    return quote(value, safe="")


@dataclass
class AdminApi:
    """The accounts API's administration endpoints, as the signed-in ``token``."""

    base_url: str
    token: str

    async def _post(self, path: str, body: Any = None) -> dict[str, Any]:
        return await call(self.base_url, "POST", path, self.token, json=body)

    # -- users -----------------------------------------------------------------------
    async def users(self, org: str) -> list[dict[str, Any]]:
        """The users of ``org``: ``{"id", "name", "email", "role", "status", "locked",
        "created_at"}`` (unix seconds)."""
        body = await call(self.base_url, "GET", "/users", self.token, params={"org": org})
        return list(body.get("users") or [])

    async def invite(
        self, org: str, *, role: str, name: str, email: str, phone: str = ""
    ) -> dict[str, Any]:
        """Invite a user: ``{"user_id", "invitation_token", "expires_at_us"}`` (shown once)."""
        body = {"role": role, "name": name, "email": email, "phone": phone}
        return await self._post(f"/orgs/{_q(org)}/users", body)

    async def reinvite(self, user: str) -> dict[str, Any]:
        """A new one-time invitation for ``user``: ``{"invitation", "expires_at"}`` (unix s)."""
        return await self._post(f"/users/{_q(user)}/reinvite")

    async def disable(self, user: str) -> dict[str, Any]:
        """Disable an account; its sessions end at once."""
        return await self._post(f"/users/{_q(user)}/disable")

    async def enable(self, user: str) -> dict[str, Any]:
        """Enable a disabled account again."""
        return await self._post(f"/users/{_q(user)}/enable")

    async def reset_mfa(self, user: str) -> dict[str, Any]:
        """Forget the user's TOTP secret: they enrol a new one."""
        return await self._post(f"/users/{_q(user)}/reset-mfa")

    async def force_password_reset(self, user: str) -> dict[str, Any]:
        """Make the user change their password at their next sign-in."""
        return await self._post(f"/users/{_q(user)}/force-password-reset")

    async def unlock(self, user: str) -> dict[str, Any]:
        """Lift a temporary lock (after failed sign-ins)."""
        return await self._post(f"/users/{_q(user)}/unlock")

    # -- care and delegation -----------------------------------------------------------
    async def add_care(self, kind: str, actor: str, patient: str, ref: str | None = None) -> str:
        """Record a care relationship (``follows``, ``consultation`` with ``ref``, EEG kinds)."""
        body: dict[str, Any] = {"kind": kind, "actor_id": actor, "patient_id": patient}
        if ref is not None:
            body["ref_id"] = ref
        return str((await self._post("/care-relationships", body))["id"])

    async def care(self, org: str) -> list[dict[str, Any]]:
        """The live care relationships of ``org``: ``{"id", "kind", "actor_id", "patient_id",
        "ref_id"}``."""
        body = await call(self.base_url, "GET", f"/orgs/{_q(org)}/care-relationships", self.token)
        return list(body.get("relationships") or [])

    async def end_care(self, rel: str) -> None:
        """End a care relationship (the rights it gave end at once)."""
        await call(self.base_url, "DELETE", f"/care-relationships/{_q(rel)}", self.token)

    async def grant_delegation(self, practitioner: str, delegate: str, scopes: list[str]) -> str:
        """A practitioner delegates ``scopes`` to a secretary; the delegation's id."""
        body = {"practitioner_id": practitioner, "delegate_id": delegate, "scopes": scopes}
        return str((await self._post("/delegations", body))["id"])

    async def revoke_delegation(self, delegation: str) -> None:
        """Revoke a delegation (effective at once)."""
        await call(self.base_url, "DELETE", f"/delegations/{_q(delegation)}", self.token)

    async def delegations(self, org: str | None = None) -> list[dict[str, Any]]:
        """The live delegations of ``org`` (its admins), else the ones I gave or received:
        ``{"id", "practitioner_id", "delegate_id", "scopes"}``."""
        path = "/me/delegations" if org is None else f"/orgs/{_q(org)}/delegations"
        return list((await call(self.base_url, "GET", path, self.token))["delegations"])
