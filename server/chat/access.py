"""Presence and chat decisions, made by :func:`server.policy.decide` wherever it has a rule.

Pure functions: the callers load the facts (:mod:`server.chat.facts`).

Two rules are not (yet) in :mod:`server.policy`, whose clinical actions always
need a patient: staff seeing the presence of staff of their own organisation
(``colleague``) and staff chatting in a direct or group conversation of their
own organisation (``member``). They are written here, explicitly, until the
policy grows them. Nothing crosses organisations: not even a superadmin sees
presence or reads a conversation of another organisation here.
"""

from __future__ import annotations

from server import policy
from server.chat.facts import UserFact
from server.chat.store import Conversation
from server.policy import Action, Decision, Role, Subject, Target, allow, deny

STAFF_CHAT_ROLES = frozenset(
    {Role.PRACTITIONER, Role.SECRETARY, Role.TECHNICIAN, Role.INTERPRETER, Role.ADMIN}
)


def presence_visible(
    viewer: Subject, target: UserFact, target_subject: Subject, facts: policy.Facts
) -> Decision:
    """May ``viewer`` see ``target``'s presence?

    A patient sees the staff who may see them (their practitioners, and the
    secretaries acting for those); staff see colleagues of their organisation
    and the patients the policy lets them see; nobody sees across organisations.
    """
    if target.user_id == viewer.user_id:
        return allow("self")
    if target.org_id != viewer.org_id:
        return deny("other_org")
    if viewer.role == Role.PATIENT:
        if target.role == Role.PATIENT:
            return deny("not_own_data")
        reverse = policy.decide(
            target_subject,
            Action.PRESENCE_SEE,
            Target("presence", target.org_id, user_id=viewer.user_id, patient_id=viewer.user_id),
            facts,
        )
        return allow("care_team") if reverse else deny("not_care_team")
    if target.role == Role.PATIENT:
        return policy.decide(
            viewer,
            Action.PRESENCE_SEE,
            Target("presence", target.org_id, user_id=target.user_id, patient_id=target.user_id),
            facts,
        )
    if viewer.role == Role.SUPERADMIN or target.role == Role.SUPERADMIN:
        return deny("superadmin_hidden")
    return allow("colleague")


def conversation_access(
    subject: Subject, action: Action, conv: Conversation, is_member: bool, facts: policy.Facts
) -> Decision:
    """May ``subject`` read (``chat.read``) or write (``chat.write``) in ``conv``?

    Members only, of the conversation's organisation; a consultation
    conversation also needs the policy's clinical permission on its patient
    (so a revoked delegation or an ended care relationship cuts access).
    """
    if conv.org != subject.org_id:
        return deny("other_org")
    if not is_member:
        return deny("not_member")
    if conv.kind == "consultation":
        return policy.decide(
            subject,
            action,
            Target(
                "conversation", conv.org, id=conv.id, patient_id=conv.patient_id,
                ref_id=conv.consultation_id,
            ),
            facts,
        )  # fmt: skip
    if subject.role not in STAFF_CHAT_ROLES:
        return deny("staff_only")
    return allow("member")


def staff_conversation_members(creator: Subject, members: dict[str, UserFact]) -> Decision:
    """May ``creator`` open a direct or group conversation with ``members``?"""
    if creator.role not in STAFF_CHAT_ROLES:
        return deny("staff_only")
    for fact in members.values():
        if fact.org_id != creator.org_id:
            return deny("other_org")
        if fact.role not in STAFF_CHAT_ROLES:
            return deny("staff_only")
    return allow("colleagues")
