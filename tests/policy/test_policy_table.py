"""The authorisation policy against a table: role x action x relationship x organisation.

Each row is explicit and carries its expected answer and reason; a hypothesis
property adds that nothing is ever allowed across organisations except for a
superadmin.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.policy import (
    Action,
    Decision,
    Delegation,
    Exam,
    Facts,
    Record,
    Relationship,
    Role,
    Subject,
    Target,
    call_access,
    conversation_access,
    decide,
    echo_call,
    eeg_access,
    eeg_exam_manage,
    eeg_exam_read,
    name_visible,
    presence_visible,
    record_access,
    record_export,
    report_sign,
    staff_conversation,
)

A, B = "o-a", "o-b"
ME = "u-me"
PAT = "u-pat"
DOC = "u-doc"
EXAM = "exam-1"

FOLLOWS = Relationship("follows", ME, PAT)
DOC_FOLLOWS = Relationship("follows", DOC, PAT)
CONSULT = Relationship("consultation", ME, PAT, "c-1")
TECH = Relationship("eeg_technician", ME, PAT, EXAM)
INTERP = Relationship("eeg_interpreter", ME, PAT, EXAM)
FOLLOWS_IN_B = Relationship("follows", ME, PAT, org_id=B)

REL = {
    "none": frozenset(),
    "follows": frozenset({FOLLOWS}),
    "consult": frozenset({CONSULT}),
    "tech": frozenset({TECH}),
    "interp": frozenset({INTERP}),
    "doc_follows": frozenset({DOC_FOLLOWS}),
    "follows_in_b": frozenset({FOLLOWS_IN_B}),
}
DELEG = {
    "none": frozenset(),
    "contact": frozenset({Delegation(DOC, ME, frozenset({"contact"}))}),
    "consult": frozenset({Delegation(DOC, ME, frozenset({"consultations"}))}),
    "records": frozenset({Delegation(DOC, ME, frozenset({"records", "contact"}))}),
    "for_other": frozenset({Delegation(DOC, "u-someone-else", frozenset({"records"}))}),
}


def clinical(org: str, patient: str = PAT, ref: str | None = None) -> Target:
    return Target("patient", org, patient_id=patient, ref_id=ref)


def account(org: str, user: str = "u-x", role: str = "patient", pract: str | None = None) -> Target:
    return Target("user", org, id=user, user_id=user, user_role=role, practitioner_id=pract)


# role, action, target, relationships, delegations, allowed, reason
ROWS: list[tuple[str, Action, Target, str, str, bool, str]] = [
    # -- patients: their own data only
    ("patient", Action.RECORD_READ, clinical(A, ME), "none", "none", True, "self"),
    ("patient", Action.CHAT_WRITE, clinical(A, ME), "none", "none", True, "self"),
    ("patient", Action.CALL_START, clinical(A, ME), "none", "none", True, "self"),
    ("patient", Action.RECORD_WRITE, clinical(A, ME), "none", "none", False, "not_own_data"),
    ("patient", Action.EEG_ANNOTATE, clinical(A, ME), "none", "none", False, "not_own_data"),
    ("patient", Action.RECORD_READ, clinical(A, "u-other"), "none", "none", False, "not_own_data"),
    ("patient", Action.RECORD_READ, clinical(B, ME), "none", "none", False, "other_org"),
    ("patient", Action.USER_LIST, Target("org", A), "none", "none", False, "admin_only"),
    ("patient", Action.USER_READ, account(A, ME), "none", "none", True, "self"),
    ("patient", Action.ORG_READ, Target("org", A), "none", "none", True, "member"),
    # -- practitioners: by care relationship
    ("practitioner", Action.RECORD_READ, clinical(A), "follows", "none", True, "care_relationship"),
    (
        "practitioner",
        Action.RECORD_WRITE,
        clinical(A),
        "follows",
        "none",
        True,
        "care_relationship",
    ),
    ("practitioner", Action.CALL_START, clinical(A), "consult", "none", True, "care_relationship"),
    ("practitioner", Action.EEG_VIEW, clinical(A), "follows", "none", True, "care_relationship"),
    (
        "practitioner",
        Action.RECORD_READ,
        clinical(A),
        "none",
        "none",
        False,
        "no_care_relationship",
    ),
    (
        "practitioner",
        Action.RECORD_READ,
        clinical(A),
        "doc_follows",
        "none",
        False,
        "no_care_relationship",
    ),
    ("practitioner", Action.RECORD_READ, clinical(B), "follows", "none", False, "other_org"),
    (
        "practitioner",
        Action.RECORD_READ,
        clinical(A),
        "follows_in_b",
        "none",
        False,
        "no_care_relationship",
    ),
    (
        "practitioner",
        Action.EEG_STREAM,
        clinical(A),
        "follows",
        "none",
        False,
        "not_allowed_for_role",
    ),
    ("practitioner", Action.USER_INVITE, account(A), "follows", "none", False, "admin_only"),
    (
        "practitioner",
        Action.DELEGATION_GRANT,
        account(A, "u-s", "secretary", ME),
        "none",
        "none",
        True,
        "own_delegation",
    ),
    (
        "practitioner",
        Action.DELEGATION_GRANT,
        account(A, "u-s", "secretary", DOC),
        "none",
        "none",
        False,
        "admin_only",
    ),
    (
        "practitioner",
        Action.DELEGATION_GRANT,
        account(A, "u-p", "patient", ME),
        "none",
        "none",
        False,
        "delegate_not_secretary",
    ),
    # -- technicians and interpreters: by EEG exam assignment
    (
        "technician",
        Action.EEG_STREAM,
        clinical(A, ref=EXAM),
        "tech",
        "none",
        True,
        "exam_assignment",
    ),
    ("technician", Action.EEG_VIEW, clinical(A, ref=EXAM), "tech", "none", True, "exam_assignment"),
    (
        "technician",
        Action.EEG_STREAM,
        clinical(A, ref="exam-2"),
        "tech",
        "none",
        False,
        "no_exam_assignment",
    ),
    (
        "technician",
        Action.RECORD_READ,
        clinical(A, ref=EXAM),
        "tech",
        "none",
        False,
        "not_allowed_for_role",
    ),
    (
        "technician",
        Action.EEG_VIEW,
        clinical(A, ref=EXAM),
        "interp",
        "none",
        False,
        "no_exam_assignment",
    ),
    (
        "interpreter",
        Action.EEG_ANNOTATE,
        clinical(A, ref=EXAM),
        "interp",
        "none",
        True,
        "exam_assignment",
    ),
    (
        "interpreter",
        Action.EEG_VIEW,
        clinical(A, ref=EXAM),
        "interp",
        "none",
        True,
        "exam_assignment",
    ),
    (
        "interpreter",
        Action.EEG_STREAM,
        clinical(A, ref=EXAM),
        "interp",
        "none",
        False,
        "not_allowed_for_role",
    ),
    (
        "interpreter",
        Action.CHAT_READ,
        clinical(A, ref=EXAM),
        "interp",
        "none",
        False,
        "not_allowed_for_role",
    ),
    ("interpreter", Action.EEG_VIEW, clinical(B, ref=EXAM), "interp", "none", False, "other_org"),
    # -- secretaries: only through a delegation, within its scopes
    ("secretary", Action.CONTACT_READ, clinical(A), "doc_follows", "contact", True, "delegation"),
    (
        "secretary",
        Action.RECORD_READ,
        clinical(A),
        "doc_follows",
        "contact",
        False,
        "no_delegation",
    ),
    ("secretary", Action.RECORD_READ, clinical(A), "doc_follows", "records", True, "delegation"),
    (
        "secretary",
        Action.CONSULTATION_MANAGE,
        clinical(A),
        "doc_follows",
        "consult",
        True,
        "delegation",
    ),
    ("secretary", Action.CONTACT_READ, clinical(A), "none", "contact", False, "no_delegation"),
    ("secretary", Action.CONTACT_READ, clinical(A), "doc_follows", "none", False, "no_delegation"),
    (
        "secretary",
        Action.RECORD_READ,
        clinical(A),
        "doc_follows",
        "for_other",
        False,
        "no_delegation",
    ),
    (
        "secretary",
        Action.RECORD_WRITE,
        clinical(A),
        "doc_follows",
        "records",
        False,
        "no_delegation",
    ),
    ("secretary", Action.CONTACT_READ, clinical(B), "doc_follows", "contact", False, "other_org"),
    # -- admins: administration of their organisation, no clinical access
    ("admin", Action.USER_INVITE, account(A), "none", "none", True, "org_admin"),
    (
        "admin",
        Action.USER_DISABLE,
        account(A, role="practitioner"),
        "none",
        "none",
        True,
        "org_admin",
    ),
    ("admin", Action.ROLE_GRANT, account(A, role="admin"), "none", "none", True, "org_admin"),
    (
        "admin",
        Action.ROLE_GRANT,
        account(A, role="superadmin"),
        "none",
        "none",
        False,
        "superadmin_only",
    ),
    ("admin", Action.USER_INVITE, account(B), "none", "none", False, "other_org"),
    ("admin", Action.USER_LIST, Target("org", B), "none", "none", False, "other_org"),
    ("admin", Action.ORG_CREATE, Target("org", A), "none", "none", False, "superadmin_only"),
    ("admin", Action.RECORD_READ, clinical(A), "follows", "none", False, "no_clinical_access"),
    ("admin", Action.CARE_ASSIGN, Target("care", A), "none", "none", True, "org_admin"),
    ("admin", Action.AUDIT_READ, Target("org", A), "none", "none", True, "org_admin"),
    ("admin", Action.USER_UNLOCK, account(A), "none", "none", True, "org_admin"),
    (
        "admin",
        Action.DELEGATION_REVOKE,
        account(A, "u-s", "secretary", DOC),
        "none",
        "none",
        True,
        "org_admin",
    ),
    (
        "secretary",
        Action.DELEGATION_REVOKE,
        account(A, "u-s", "secretary", DOC),
        "none",
        "none",
        False,
        "admin_only",
    ),
    (
        "practitioner",
        Action.PRESENCE_SEE,
        clinical(A),
        "consult",
        "none",
        True,
        "care_relationship",
    ),
    ("secretary", Action.PRESENCE_SEE, clinical(A), "doc_follows", "consult", True, "delegation"),
    # -- recovery actions and listings: the organisation's admins
    ("admin", Action.USER_REINVITE, account(A), "none", "none", True, "org_admin"),
    (
        "admin",
        Action.USER_RESET_MFA,
        account(A, "u-d", "practitioner"),
        "none",
        "none",
        True,
        "org_admin",
    ),
    ("admin", Action.USER_ENABLE, account(A), "none", "none", True, "org_admin"),
    ("admin", Action.USER_FORCE_PASSWORD_RESET, account(A), "none", "none", True, "org_admin"),
    (
        "admin",
        Action.USER_RESET_MFA,
        account(A, "u-r", "superadmin"),
        "none",
        "none",
        False,
        "superadmin_only",
    ),
    ("admin", Action.USER_REINVITE, account(B), "none", "none", False, "other_org"),
    ("admin", Action.CARE_LIST, Target("org", A, id=A), "none", "none", True, "org_admin"),
    ("admin", Action.DELEGATION_LIST, Target("org", A, id=A), "none", "none", True, "org_admin"),
    ("admin", Action.CARE_LIST, Target("org", B, id=B), "none", "none", False, "other_org"),
    (
        "practitioner",
        Action.USER_RESET_MFA,
        account(A, ME, "practitioner"),
        "none",
        "none",
        False,
        "admin_only",
    ),
    ("secretary", Action.USER_ENABLE, account(A), "none", "none", False, "admin_only"),
    (
        "patient",
        Action.USER_FORCE_PASSWORD_RESET,
        account(A, ME),
        "none",
        "none",
        False,
        "admin_only",
    ),
    (
        "practitioner",
        Action.CARE_LIST,
        Target("org", A, id=A),
        "follows",
        "none",
        False,
        "admin_only",
    ),
    (
        "practitioner",
        Action.DELEGATION_LIST,
        Target("org", A, id=A),
        "none",
        "none",
        False,
        "admin_only",
    ),
    (
        "superadmin",
        Action.USER_REINVITE,
        account(B, "u-r", "superadmin"),
        "none",
        "none",
        True,
        "superadmin",
    ),
    # -- superadmin: everywhere (crossings are flagged for the audit trail)
    ("superadmin", Action.USER_LIST, Target("org", B), "none", "none", True, "superadmin"),
    ("superadmin", Action.ORG_CREATE, Target("org", A), "none", "none", True, "superadmin"),
    ("superadmin", Action.RECORD_READ, clinical(B), "none", "none", True, "superadmin"),
    # -- the record index (rule 9 uses these through record_access) and account erasure
    ("patient", Action.RECORD_META, clinical(A, ME), "none", "none", True, "self"),
    ("practitioner", Action.RECORD_META, clinical(A), "follows", "none", True,
     "care_relationship"),
    ("secretary", Action.RECORD_META, clinical(A), "doc_follows", "consult", True, "delegation"),
    ("secretary", Action.RECORD_META, clinical(A), "doc_follows", "contact", False,
     "no_delegation"),
    ("admin", Action.RECORD_META, clinical(A), "follows", "none", False, "no_clinical_access"),
    ("admin", Action.USER_DELETE, account(A), "none", "none", True, "org_admin"),
    ("admin", Action.USER_DELETE, account(A, role="superadmin"), "none", "none", False,
     "superadmin_only"),
    ("admin", Action.USER_DELETE, account(B), "none", "none", False, "other_org"),
    ("practitioner", Action.USER_DELETE, account(A), "follows", "none", False, "admin_only"),
    ("patient", Action.USER_DELETE, account(A, ME), "none", "none", False, "admin_only"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("role", "action", "target", "rels", "delegs", "allowed", "reason"),
    ROWS,
    ids=[f"{r[0]}-{r[1].value}-{r[2].org_id}-{r[3]}-{r[4]}-{i}" for i, r in enumerate(ROWS)],
)
def test_policy_row(
    role: str, action: Action, target: Target, rels: str, delegs: str, allowed: bool, reason: str
) -> None:
    subject = Subject(ME, A, role, DELEG[delegs])
    decision = decide(subject, action, target, Facts(REL[rels]))
    assert decision == Decision(
        allowed, reason, cross_org=role == "superadmin" and target.org_id != A
    )


def test_every_action_and_role_appears_in_the_table() -> None:
    assert {r[1] for r in ROWS} == set(Action)
    assert {r[0] for r in ROWS} == {r.value for r in Role}


def test_acting_for_limits_a_secretary_to_one_practitioner() -> None:
    delegs = frozenset({Delegation(DOC, ME, frozenset({"contact"}))})
    facts = Facts(frozenset({DOC_FOLLOWS}))
    assert decide(
        Subject(ME, A, "secretary", delegs, acting_for=DOC), Action.CONTACT_READ, clinical(A), facts
    ).allowed
    assert not decide(
        Subject(ME, A, "secretary", delegs, acting_for="u-other"),
        Action.CONTACT_READ,
        clinical(A),
        facts,
    ).allowed


ids = st.sampled_from(["u-me", "u-pat", "u-doc", "u-x"])
orgs = st.sampled_from(["o-a", "o-b", "o-c"])


@given(
    role=st.sampled_from([r for r in Role if r != Role.SUPERADMIN]),
    action=st.sampled_from(list(Action)),
    subject_org=orgs,
    target_org=orgs,
    patient=ids,
    user=ids,
    target_role=st.sampled_from([*(r.value for r in Role), None]),
    rels=st.frozensets(
        st.builds(
            Relationship,
            st.sampled_from(["follows", "consultation", "eeg_technician", "eeg_interpreter"]),
            ids,
            ids,
            st.sampled_from([None, EXAM]),
            st.sampled_from([None, "o-a", "o-b"]),
        ),
        max_size=4,
    ),
    scopes=st.frozensets(st.sampled_from(["contact", "consultations", "records"])),
)
def test_nothing_crosses_organisations_but_superadmin(
    role: Role,
    action: Action,
    subject_org: str,
    target_org: str,
    patient: str,
    user: str,
    target_role: str | None,
    rels: frozenset[Relationship],
    scopes: frozenset[str],
) -> None:
    subject = Subject(ME, subject_org, role, frozenset({Delegation(DOC, ME, scopes)}))
    target = Target(
        "any",
        target_org,
        id=user,
        user_id=user,
        user_role=target_role,
        practitioner_id=ME,
        patient_id=patient,
        ref_id=EXAM,
    )
    decision = decide(subject, action, target, Facts(rels))
    if subject_org != target_org:
        assert not decision.allowed
        assert decision.reason == "other_org"
    assert not decision.cross_org
    assert decide(Subject(ME, subject_org, Role.SUPERADMIN), action, target).allowed


# -- rule 5: presence and conversations ------------------------------------------------------
SEC_FOR_DOC = frozenset({Delegation(DOC, "u-sec", frozenset({"consultations"}))})

# viewer (id, org, role), target (id, org, role, delegations), relationships, allowed, reason
PRESENCE_ROWS: list[tuple[tuple[str, str, str], tuple[str, str, str], str, bool, str]] = [
    ((ME, A, "practitioner"), (ME, A, "practitioner"), "none", True, "self"),
    ((ME, A, "practitioner"), (DOC, A, "practitioner"), "none", True, "colleague"),
    ((ME, A, "secretary"), (DOC, A, "technician"), "none", True, "colleague"),
    ((ME, A, "practitioner"), (DOC, B, "practitioner"), "none", False, "other_org"),
    ((ME, A, "practitioner"), (PAT, A, "patient"), "follows", True, "care_relationship"),
    ((ME, A, "practitioner"), (PAT, A, "patient"), "none", False, "no_care_relationship"),
    ((ME, A, "admin"), (PAT, A, "patient"), "none", False, "no_clinical_access"),
    ((PAT, A, "patient"), (DOC, A, "practitioner"), "doc_follows", True, "care_team"),
    ((PAT, A, "patient"), (DOC, A, "practitioner"), "none", False, "not_care_team"),
    ((PAT, A, "patient"), ("u-sec", A, "secretary"), "doc_follows", True, "care_team"),
    ((PAT, A, "patient"), ("u-other", A, "patient"), "none", False, "not_own_data"),
    ((PAT, A, "patient"), (DOC, B, "practitioner"), "doc_follows", False, "other_org"),
    ((ME, A, "superadmin"), (DOC, A, "practitioner"), "none", False, "superadmin_hidden"),
    ((ME, A, "practitioner"), (DOC, A, "superadmin"), "none", False, "superadmin_hidden"),
]


@pytest.mark.parametrize(("viewer", "target", "rels", "allowed", "reason"), PRESENCE_ROWS)
def test_presence_row(
    viewer: tuple[str, str, str],
    target: tuple[str, str, str],
    rels: str,
    allowed: bool,
    reason: str,
) -> None:
    delegs = SEC_FOR_DOC if target[0] == "u-sec" else frozenset()
    decision = presence_visible(Subject(*viewer), Subject(*target, delegs), Facts(REL[rels]))
    assert (decision.allowed, decision.reason) == (allowed, reason)


# -- rule 6: display names -------------------------------------------------------------------
SEC = "u-sec"
# viewer (id, org, role), target (id, org, role), relationships, delegations, allowed, reason
NAME_ROWS: list[tuple[tuple[str, str, str], tuple[str, str, str], str, str, bool, str]] = [
    ((ME, A, "patient"), (ME, A, "patient"), "none", "none", True, "self"),
    ((ME, A, "practitioner"), (DOC, A, "secretary"), "none", "none", True, "colleague"),
    ((ME, A, "technician"), (DOC, A, "admin"), "none", "none", True, "colleague"),
    ((ME, A, "practitioner"), (DOC, B, "practitioner"), "none", "none", False, "other_org"),
    ((ME, A, "admin"), (PAT, A, "patient"), "none", "none", True, "org_admin"),
    ((ME, A, "admin"), (PAT, B, "patient"), "none", "none", False, "other_org"),
    ((ME, A, "practitioner"), (PAT, A, "patient"), "follows", "none", True, "care_relationship"),
    ((ME, A, "practitioner"), (PAT, A, "patient"), "consult", "none", True, "care_relationship"),
    ((ME, A, "practitioner"), (PAT, A, "patient"), "none", "none", False,
     "no_care_relationship"),
    ((ME, A, "practitioner"), (PAT, A, "patient"), "doc_follows", "none", False,
     "no_care_relationship"),
    ((ME, A, "practitioner"), (PAT, A, "patient"), "follows_in_b", "none", False,
     "no_care_relationship"),
    ((ME, A, "technician"), (PAT, A, "patient"), "tech", "none", True, "care_relationship"),
    ((ME, A, "interpreter"), (PAT, A, "patient"), "interp", "none", True, "care_relationship"),
    ((ME, A, "technician"), (PAT, A, "patient"), "none", "none", False, "no_care_relationship"),
    ((SEC, A, "secretary"), (PAT, A, "patient"), "doc_follows", "sec", True, "delegation"),
    ((SEC, A, "secretary"), (PAT, A, "patient"), "none", "sec", False, "no_care_relationship"),
    ((SEC, A, "secretary"), (PAT, A, "patient"), "doc_follows", "none", False,
     "no_care_relationship"),
    ((PAT, A, "patient"), (DOC, A, "practitioner"), "doc_follows", "none", True, "care_team"),
    ((PAT, A, "patient"), (DOC, A, "practitioner"), "none", "none", False, "not_care_team"),
    ((PAT, A, "patient"), (SEC, A, "secretary"), "doc_follows", "sec", True, "care_team"),
    ((PAT, A, "patient"), (SEC, A, "secretary"), "doc_follows", "none", False, "not_care_team"),
    ((PAT, A, "patient"), ("u-other", A, "patient"), "none", "none", False, "not_own_data"),
    ((PAT, A, "patient"), (DOC, A, "admin"), "none", "none", False, "not_care_team"),
    ((PAT, A, "patient"), (DOC, B, "practitioner"), "doc_follows", "none", False, "other_org"),
    ((ME, A, "superadmin"), (DOC, B, "practitioner"), "none", "none", True, "superadmin"),
    ((ME, A, "superadmin"), (DOC, A, "superadmin"), "none", "none", True, "superadmin"),
    ((ME, A, "practitioner"), (DOC, B, "superadmin"), "none", "none", False, "other_org"),
]  # fmt: skip
NAME_DELEGS = {"none": frozenset(), "sec": SEC_FOR_DOC}


@pytest.mark.parametrize(("viewer", "target", "rels", "delegs", "allowed", "reason"), NAME_ROWS)
def test_name_row(
    viewer: tuple[str, str, str],
    target: tuple[str, str, str],
    rels: str,
    delegs: str,
    allowed: bool,
    reason: str,
) -> None:
    d = NAME_DELEGS[delegs]
    decision = name_visible(Subject(*viewer, d), Subject(*target, d), Facts(REL[rels]))
    crossed = viewer[2] == "superadmin" and target[1] != viewer[1]
    assert decision == Decision(allowed, reason, cross_org=crossed)


@given(
    viewer_role=st.sampled_from([r for r in Role if r != Role.SUPERADMIN]),
    target_role=st.sampled_from(list(Role)),
    rels=st.frozensets(
        st.builds(
            Relationship,
            st.sampled_from(["follows", "consultation", "eeg_technician", "eeg_interpreter"]),
            st.sampled_from([ME, DOC, PAT]),
            st.sampled_from([ME, DOC, PAT]),
            st.sampled_from([None, EXAM]),
            st.sampled_from([None, A, B]),
        ),
        max_size=4,
    ),
)
def test_no_name_crosses_organisations_but_for_superadmin(
    viewer_role: Role, target_role: Role, rels: frozenset[Relationship]
) -> None:
    delegs = frozenset({Delegation(DOC, ME, frozenset({"consultations"}))})
    viewer = Subject(ME, A, viewer_role, delegs)
    assert not name_visible(viewer, Subject(PAT, B, target_role, delegs), Facts(rels)).allowed


CONSULT_CONV = Target("conversation", A, id="c-1", patient_id=PAT, ref_id="k1")
STAFF_CONV = Target("conversation", A, id="c-2")

# role, action, conversation, consultation?, member?, relationships, delegations, allowed, reason
CONV_ROWS: list[tuple[str, Action, Target, bool, bool, str, str, bool, str]] = [
    ("practitioner", Action.CHAT_WRITE, STAFF_CONV, False, True, "none", "none", True, "member"),
    ("practitioner", Action.CHAT_READ, STAFF_CONV, False, False, "none", "none", False,
     "not_member"),
    ("patient", Action.CHAT_READ, STAFF_CONV, False, True, "none", "none", False, "staff_only"),
    ("practitioner", Action.CHAT_READ, Target("conversation", B, id="c-3"), False, True, "none",
     "none", False, "other_org"),
    ("superadmin", Action.CHAT_READ, STAFF_CONV, False, True, "none", "none", False,
     "superadmin_hidden"),
    ("practitioner", Action.CHAT_WRITE, CONSULT_CONV, True, True, "consult", "none", True,
     "care_relationship"),
    ("practitioner", Action.CHAT_WRITE, CONSULT_CONV, True, True, "none", "none", False,
     "no_care_relationship"),
    ("secretary", Action.CHAT_READ, CONSULT_CONV, True, True, "doc_follows", "consult", True,
     "delegation"),
    ("secretary", Action.CHAT_READ, CONSULT_CONV, True, True, "doc_follows", "none", False,
     "no_delegation"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("role", "action", "conv", "consultation", "member", "rels", "delegs", "allowed", "reason"),
    CONV_ROWS,
)
def test_conversation_row(
    role: str,
    action: Action,
    conv: Target,
    consultation: bool,
    member: bool,
    rels: str,
    delegs: str,
    allowed: bool,
    reason: str,
) -> None:
    decision = conversation_access(
        Subject(ME, A, role, DELEG[delegs]),
        action,
        conv,
        consultation=consultation,
        is_member=member,
        facts=Facts(REL[rels]),
    )
    assert (decision.allowed, decision.reason) == (allowed, reason)


def test_staff_conversations_stay_among_staff_of_one_organisation() -> None:
    me = Subject(ME, A, "practitioner")
    assert staff_conversation(me, [Subject(DOC, A, "secretary")]).reason == "colleagues"
    assert staff_conversation(me, [Subject(DOC, B, "practitioner")]).reason == "other_org"
    assert staff_conversation(me, [Subject(PAT, A, "patient")]).reason == "staff_only"
    assert staff_conversation(Subject(PAT, A, "patient"), []).reason == "staff_only"


# -- rule 7: calls --------------------------------------------------------------------------
# role, conversation, consultation?, member?, relationships, delegations, allowed, reason
CALL_ROWS: list[tuple[str, Target, bool, bool, str, str, bool, str]] = [
    ("practitioner", STAFF_CONV, False, True, "none", "none", True, "member"),
    ("secretary", STAFF_CONV, False, True, "none", "none", True, "member"),
    ("practitioner", STAFF_CONV, False, False, "none", "none", False, "not_member"),
    ("patient", STAFF_CONV, False, True, "none", "none", False, "staff_only"),
    ("practitioner", CONSULT_CONV, True, True, "consult", "none", True, "care_relationship"),
    ("practitioner", CONSULT_CONV, True, True, "follows", "none", True, "care_relationship"),
    ("practitioner", CONSULT_CONV, True, True, "none", "none", False, "no_care_relationship"),
    ("practitioner", CONSULT_CONV, True, False, "consult", "none", False, "not_member"),
    ("secretary", CONSULT_CONV, True, True, "doc_follows", "consult", False, "no_delegation"),
    ("admin", CONSULT_CONV, True, True, "none", "none", False, "no_clinical_access"),
    ("interpreter", CONSULT_CONV, True, True, "interp", "none", False, "not_allowed_for_role"),
    ("practitioner", Target("conversation", B, id="c-3", patient_id=PAT), True, True,
     "consult", "none", False, "other_org"),
    ("superadmin", CONSULT_CONV, True, True, "none", "none", False, "superadmin_hidden"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("role", "conv", "consultation", "member", "rels", "delegs", "allowed", "reason"), CALL_ROWS
)
def test_call_row(
    role: str,
    conv: Target,
    consultation: bool,
    member: bool,
    rels: str,
    delegs: str,
    allowed: bool,
    reason: str,
) -> None:
    decision = call_access(
        Subject(ME, A, role, DELEG[delegs]),
        conv,
        consultation=consultation,
        is_member=member,
        facts=Facts(REL[rels]),
    )
    assert (decision.allowed, decision.reason) == (allowed, reason)


def test_a_patient_calls_from_their_own_consultation_only() -> None:
    mine = Target("conversation", A, id="c-1", patient_id=ME, ref_id="k1")
    kw = {"consultation": True, "is_member": True, "facts": Facts()}
    assert call_access(Subject(ME, A, "patient"), mine, **kw).reason == "self"  # type: ignore[arg-type]
    theirs = call_access(Subject(ME, A, "patient"), CONSULT_CONV, **kw)  # type: ignore[arg-type]
    assert (theirs.allowed, theirs.reason) == (False, "not_own_data")


@pytest.mark.parametrize(
    ("role", "echo", "allowed", "reason"),
    [
        ("patient", True, True, "echo_test"),
        ("practitioner", True, True, "echo_test"),
        ("patient", False, False, "not_echo_service"),
        ("superadmin", True, False, "superadmin_hidden"),
    ],
)
def test_echo_call_row(role: str, echo: bool, allowed: bool, reason: str) -> None:
    decision = echo_call(Subject(ME, A, role), echo_service=echo)
    assert (decision.allowed, decision.reason) == (allowed, reason)


# -- rule 9: medical records --------------------------------------------------------------------
EXAM_PEOPLE = Exam("e-1", A, PAT, DOC, "u-tech", frozenset({"u-interp"}))
CARE = Facts(frozenset({DOC_FOLLOWS}))
DOC_R = Record(A, PAT)
EXAM_DOC = Record(A, PAT, "document", exam=EXAM_PEOPLE)
EXAM_REPORT = Record(A, PAT, "eeg_report", exam=EXAM_PEOPLE)
NOTE_DRAFT = Record(A, PAT, "consultation_note", draft=True, author_id=DOC)
R, W, M = Action.RECORD_READ, Action.RECORD_WRITE, Action.RECORD_META
SEC_CONSULT = frozenset({Delegation(DOC, "u-sec", frozenset({"consultations"}))})
SEC_RECORDS = frozenset({Delegation(DOC, "u-sec", frozenset({"records"}))})

# subject (id, role, delegations), action, record, allowed, reason
RECORD_ROWS: list[tuple[tuple[str, str, frozenset[Delegation]], Action, Record, bool, str]] = [
    ((PAT, "patient", frozenset()), R, DOC_R, True, "self"),
    ((PAT, "patient", frozenset()), W, DOC_R, False, "not_own_data"),
    ((PAT, "patient", frozenset()), R, NOTE_DRAFT, False, "not_own_data"),
    (("u-other", "patient", frozenset()), M, DOC_R, False, "not_own_data"),
    ((DOC, "practitioner", frozenset()), W, DOC_R, True, "care_relationship"),
    ((DOC, "practitioner", frozenset()), R, NOTE_DRAFT, True, "care_relationship"),
    (("u-doc2", "practitioner", frozenset()), R, DOC_R, False, "no_care_relationship"),
    ((DOC, "practitioner", frozenset()), R, EXAM_DOC, True, "ordering_practitioner"),
    (("u-interp", "interpreter", frozenset()), R, EXAM_DOC, True, "exam_interpreter"),
    (("u-interp", "interpreter", frozenset()), W, EXAM_REPORT, True, "exam_interpreter"),
    (("u-interp", "interpreter", frozenset()), W, Record(A, PAT, "consultation_note",
     exam=EXAM_PEOPLE), False, "not_allowed_for_role"),
    (("u-interp2", "interpreter", frozenset()), M, EXAM_DOC, False, "not_assigned"),
    (("u-interp", "interpreter", frozenset()), R, DOC_R, False, "not_assigned"),
    (("u-tech", "technician", frozenset()), W, EXAM_DOC, True, "exam_technician"),
    (("u-tech", "technician", frozenset()), M, EXAM_REPORT, True, "exam_technician"),
    (("u-tech", "technician", frozenset()), R, EXAM_REPORT, False, "not_allowed_for_role"),
    (("u-sec", "secretary", SEC_CONSULT), M, DOC_R, True, "delegation"),
    (("u-sec", "secretary", SEC_CONSULT), R, DOC_R, False, "no_delegation"),
    (("u-sec", "secretary", SEC_RECORDS), R, DOC_R, True, "delegation"),
    (("u-sec", "secretary", SEC_RECORDS), R, NOTE_DRAFT, False, "no_delegation"),
    (("u-sec", "secretary", SEC_RECORDS), W, DOC_R, False, "no_delegation"),
    (("u-adm", "admin", frozenset()), M, DOC_R, False, "no_clinical_access"),
    (("u-root", "superadmin", frozenset()), R, DOC_R, False, "superadmin_hidden"),
    ((DOC, "practitioner", frozenset()), Action.CHAT_READ, DOC_R, False, "not_a_record_action"),
]  # fmt: skip


@pytest.mark.parametrize(("who", "action", "record", "allowed", "reason"), RECORD_ROWS)
def test_record_row(
    who: tuple[str, str, frozenset[Delegation]],
    action: Action,
    record: Record,
    allowed: bool,
    reason: str,
) -> None:
    decision = record_access(Subject(who[0], A, who[1], who[2]), action, record, CARE)
    assert (decision.allowed, decision.reason) == (allowed, reason)


def test_records_never_cross_organisations() -> None:
    other = Record(B, PAT, exam=Exam("e-1", B, PAT, DOC, "u-tech", frozenset({"u-interp"})))
    for who, role in ((DOC, "practitioner"), ("u-interp", "interpreter"), (PAT, "patient")):
        assert record_access(Subject(who, A, role), R, other, CARE).reason == "other_org"


def test_only_the_author_signs_and_only_the_patient_exports() -> None:
    doc = Subject(DOC, A, "practitioner")
    assert report_sign(doc, NOTE_DRAFT, CARE) == Decision(True, "author")
    theirs = Record(A, PAT, "consultation_note", draft=True, author_id="u-doc2")
    assert report_sign(doc, theirs, CARE).reason == "not_author"
    assert not report_sign(Subject(PAT, A, "patient"), NOTE_DRAFT, CARE)
    assert record_export(Subject(PAT, A, "patient"), PAT, A).reason == "self"
    assert record_export(doc, PAT, A).reason == "not_own_data"
    assert record_export(Subject(PAT, A, "patient"), PAT, B).reason == "other_org"


# -- EEG exams (rule 8) ------------------------------------------------------------------------
EEG_EXAM = Exam("e-1", A, PAT, DOC, "u-tech", frozenset({"u-interp", "u-reader"}))
ES, EV, EA = Action.EEG_STREAM, Action.EEG_VIEW, Action.EEG_ANNOTATE

# subject (id, role, org), action, allowed, reason
EEG_ROWS: list[tuple[tuple[str, str, str], Action, bool, str]] = [
    (("u-tech", "technician", A), ES, True, "exam_technician"),
    (("u-tech", "technician", A), EV, True, "exam_technician"),
    (("u-tech", "technician", A), EA, True, "exam_technician"),
    (("u-tech2", "technician", A), ES, False, "not_assigned"),
    (("u-interp", "interpreter", A), EV, True, "exam_interpreter"),
    (("u-interp", "interpreter", A), EA, True, "exam_interpreter"),
    (("u-interp", "interpreter", A), ES, False, "not_exam_technician"),
    (("u-reader", "practitioner", A), EV, True, "exam_interpreter"),  # an interpreting physician
    (("u-other", "interpreter", A), EV, False, "not_assigned"),
    (("u-interp", "interpreter", B), EV, False, "other_org"),
    ((DOC, "practitioner", A), EV, True, "ordering_practitioner"),
    ((DOC, "practitioner", A), EA, False, "not_allowed_for_role"),
    ((DOC, "practitioner", A), ES, False, "not_allowed_for_role"),
    (("u-doc2", "practitioner", A), EV, False, "not_assigned"),  # care alone is not enough
    (("u-tech", "interpreter", A), ES, False, "role_changed"),  # re-roled since assigned
    ((PAT, "patient", A), EV, False, "not_assigned"),
    (("u-adm", "admin", A), EV, False, "not_assigned"),
    (("u-root", "superadmin", A), EV, False, "superadmin_hidden"),
    (("u-tech", "technician", A), Action.CHAT_READ, False, "not_an_eeg_action"),
]


@pytest.mark.parametrize(("who", "action", "allowed", "reason"), EEG_ROWS)
def test_eeg_row(who: tuple[str, str, str], action: Action, allowed: bool, reason: str) -> None:
    decision = eeg_access(Subject(who[0], who[2], who[1]), action, EEG_EXAM)
    assert (decision.allowed, decision.reason) == (allowed, reason)


def test_eeg_exams_are_managed_by_admins_and_their_ordering_practitioner() -> None:
    cares = Facts(frozenset({Relationship("follows", DOC, PAT)}))
    rows = [
        (Subject("u-adm", A, "admin"), Facts(), True, "org_admin"),
        (Subject(DOC, A, "practitioner"), cares, True, "ordering_practitioner"),
        (Subject(DOC, A, "practitioner"), Facts(), False, "no_care_relationship"),
        (Subject("u-doc2", A, "practitioner"), cares, False, "not_allowed_for_role"),
        (Subject("u-tech", A, "technician"), cares, False, "not_allowed_for_role"),
        (Subject("u-adm", B, "admin"), Facts(), False, "other_org"),
        (Subject("u-root", A, "superadmin"), Facts(), False, "superadmin_hidden"),
    ]
    for subject, facts, allowed, reason in rows:
        decision = eeg_exam_manage(subject, EEG_EXAM, facts)
        assert (decision.allowed, decision.reason) == (allowed, reason), subject
    reads = [
        (Subject("u-interp", A, "interpreter"), True, "exam_member"),
        (Subject("u-adm", A, "admin"), True, "org_admin"),
        (Subject("u-other", A, "interpreter"), False, "not_assigned"),
        (Subject(PAT, A, "patient"), False, "not_assigned"),
        (Subject("u-interp", B, "interpreter"), False, "other_org"),
    ]
    for subject, allowed, reason in reads:
        decision = eeg_exam_read(subject, EEG_EXAM)
        assert (decision.allowed, decision.reason) == (allowed, reason), subject
