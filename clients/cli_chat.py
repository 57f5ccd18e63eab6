"""``medhub-chat`` chat and presence commands (over the WebSocket, with names and local times).

Each command connects with the profile's session (giving up after
``--connect-timeout``), does its work and closes; ``tail`` stays until Ctrl-C
or the session ends, reconnecting by itself. People are shown by display name
(the accounts directory, asked once per run); an id the directory does not
tell (not visible, or an older server) is shown as the id.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from clients.cli_session import AddCommand, Context, say
from clients.cli_text import detail, refusals, short_stamp, stamp
from clients.connection import SESSION_ENDED_CLOSE, TypedEvent
from clients.errors import ApiError, MedhubError, TransportError
from clients.sdk import MedhubClient
from protocol.chat import ChatEvent

Command = Callable[[Context, MedhubClient], Awaitable[int]]
#: Messages whose text ``tail`` remembers, to quote them when edited or deleted.
TAIL_MEMORY = 1000
#: Messages ``tail`` shows from before it started (without ``--after``).
TAIL_BACKLOG = 20


class Names:
    """Display names for ids, from the directory; falls back to the id."""

    def __init__(self, client: MedhubClient) -> None:
        self.client = client
        self.known: dict[str, str] = {}

    async def load(self, ids: list[str] | set[str]) -> None:
        """Ask the directory for the ids not known yet.

        A refusal (an older server) leaves them as ids for the run; a network
        failure leaves them as ids for now (asked again next time), so ``tail``
        never stops for a name.
        """
        wanted = [i for i in ids if i not in self.known]
        if not wanted:
            return
        try:
            found = await self.client.names(wanted)
        except ApiError:
            found = {}
        except TransportError:
            return
        for uid in wanted:
            person = found.get(uid)
            self.known[uid] = person.name if person else uid

    def __call__(self, user_id: str) -> str:
        return self.known.get(user_id, user_id)


def _json_line(obj: Any) -> None:
    print(json.dumps(msgspec.to_builtins(obj), ensure_ascii=False), flush=True)


def _event_json(ev: TypedEvent, names: Names) -> dict[str, Any]:
    out: dict[str, Any] = {"ch": ev.ch, "seq": ev.seq, "kind": ev.kind, "data": ev.data}
    sender = getattr(ev.data, "sender", None) or (
        ev.data.get("user") if isinstance(ev.data, dict) else None
    )
    if isinstance(sender, str):
        out["name"] = names(sender)
    return out


def _status_printer() -> tuple[Callable[[MedhubError, float], None], Callable[[], None]]:
    """``on_retry`` / ``on_connected`` callbacks for ``tail``: one line per state change."""
    state = {"up": False, "seen": False}

    def on_retry(error: MedhubError, delay_s: float) -> None:
        if isinstance(error, TransportError) and error.close_code == SESSION_ENDED_CLOSE:
            return  # the session ended: the last line says so
        if state["up"]:
            state["up"] = False
            print(f"medhub-chat: connection lost ({detail(error)}); reconnecting",
                  file=sys.stderr, flush=True)  # fmt: skip

    def on_connected() -> None:
        if not state["up"] and state["seen"]:
            print("medhub-chat: reconnected", file=sys.stderr, flush=True)
        state["up"] = state["seen"] = True

    return on_retry, on_connected


def connected(command: Command) -> Callable[[Context], int]:
    """A command run with a connected client (closed afterwards)."""

    async def go(ctx: Context) -> int:
        client = MedhubClient(ctx.server, token=ctx.token())
        if ctx.args.command == "tail":
            client.on_retry, client.on_connected = _status_printer()
        try:
            await client.connect(timeout_s=ctx.args.connect_timeout)
            return await command(ctx, client)
        finally:
            await client.close()

    return lambda ctx: asyncio.run(go(ctx))


def _me(client: MedhubClient) -> str:
    return client.session.user_id if client.session else ""


# -- conversations ---------------------------------------------------------------------------
async def conversations(ctx: Context, client: MedhubClient) -> int:
    """My conversations: who is in them, unread counts."""
    convs = await client.conversations()
    names = Names(client)
    await names.load({m for c in convs for m in c.get("members") or ()})
    if ctx.args.json:
        for c in convs:
            _json_line({**c, "names": {m: names(m) for m in c.get("members") or ()}})
        return 0
    if not convs:
        say(
            "no conversations yet: open one with "
            f"`{ctx.command('open USER')}` or `{ctx.command('consult CONSULTATION')}`"
        )
        return 0
    me = _me(client)
    for c in convs:
        members = c.get("members") or []
        who = ", ".join(names(m) for m in members if m != me) or "only me"
        label = f"{c['title']} ({who})" if c.get("title") else who
        unread = f"  {c['unread']} unread" if c.get("unread") else ""
        say(f"{c['conv']}  {c['kind']:<12}  {label}{unread}")
    return 0


async def _describe(client: MedhubClient, conv: str, names: Names) -> str:
    """Who is in ``conv`` besides me, by name."""
    found = next((c for c in await client.conversations() if c["conv"] == conv), None)
    members = [m for m in (found or {}).get("members") or [] if m != _me(client)]
    await names.load(members)
    return ", ".join(names(m) for m in members) or "only me"


async def open_conversation(ctx: Context, client: MedhubClient) -> int:
    """Open (create or find) a conversation with one person, or a group with --title."""
    users: list[str] = ctx.args.users
    kind = "direct" if len(users) == 1 and not ctx.args.title else "group"
    fields = {"title": ctx.args.title} if ctx.args.title else {}
    with refusals(
        forbidden="you may not open a conversation with them (another organisation, a patient "
        "outside your care, or a group with patients), or one of the ids is unknown",
        bad_request="name the people by their user ids (u-...), other than yourself",
    ):
        conv = await client.create_conversation(kind, users, **fields)
    return await _opened(ctx, client, conv, f"conversation {conv}")


async def consult(ctx: Context, client: MedhubClient) -> int:
    """Open a consultation's conversation (and send a first message)."""
    cid = ctx.args.consultation
    with refusals(
        not_found=f"no consultation {cid}: check its id (an administrator records it with "
        "`medhub-chat admin care add PRACTITIONER PATIENT --consultation ID`)",
        forbidden=f"you are not a participant of consultation {cid}",
        bad_request=f"{cid!r} is not a consultation id (letters, digits, '.', '_', ':', '-')",
    ):
        conv = await client.create_conversation("consultation", consultation=cid)
    return await _opened(ctx, client, conv, f"consultation {cid}: conversation {conv}")


async def _opened(ctx: Context, client: MedhubClient, conv: str, what: str) -> int:
    names = Names(client)
    who = await _describe(client, conv, names)
    seq = None
    if ctx.args.message:
        seq = await client.send_message(conv, ctx.args.message)
    if ctx.args.json:
        _json_line({"conv": conv, "with": who, **({"seq": seq} if seq else {})})
        return 0
    say(f"{what} with {who}")
    if seq is not None:
        say(f"sent as #{seq}")
    say(f"read it with `{ctx.command(f'tail {conv}')}`")
    return 0


# -- messages --------------------------------------------------------------------------------
NOT_MEMBER = dict(
    not_found="no such conversation, or you are not one of its members",
    forbidden="you are not allowed in this conversation (any more)",
)


async def send(ctx: Context, client: MedhubClient) -> int:
    """Send a message; says its number once the server has committed it."""
    with refusals(**NOT_MEMBER):
        seq = await client.send_message(
            ctx.args.conv, ctx.args.text, client_msg_id=ctx.args.client_msg_id
        )
    if ctx.args.json:
        _json_line({"conv": ctx.args.conv, "seq": seq})
    else:
        say(f"sent as #{seq}")
    return 0


def _message_line(ev: ChatEvent, names: Names, when: str) -> str:
    """``<when> Name: text`` (with "(edited)", or "(message deleted)")."""
    text = "(message deleted)" if ev.text is None else ev.text
    edited = " (edited)" if ev.text is not None and (ev.version or 1) > 1 else ""
    return f"{when} {names(ev.sender)}: {text}{edited}"


async def history(ctx: Context, client: MedhubClient) -> int:
    """A page of a conversation's messages (oldest first), and how to get the next page."""
    a = ctx.args
    with refusals(**NOT_MEMBER):
        events, more = await client.history(a.conv, before=a.before, after=a.after, limit=a.limit)
    names = Names(client)
    await names.load({e.sender for e in events})
    if a.json:
        for e in events:
            _json_line({"conv": a.conv, "seq": e.seq, "kind": e.kind, "data": e,
                        "name": names(e.sender)})  # fmt: skip
        _json_line({"more": more})
        return 0
    if not events:
        say("no messages yet" if a.before is None and a.after is None else "no messages there")
        return 0
    for e in events:
        if e.kind == "message":  # edits and deletes show on the message they changed
            say(f"#{e.seq:<5} " + _message_line(e, names, stamp(e.at) + " "))
    if more and a.after is None:
        say(f"older messages: `{ctx.command(f'history {a.conv} --before {events[0].seq}')}`")
    elif more:
        say(f"newer messages: `{ctx.command(f'history {a.conv} --after {events[-1].seq}')}`")
    return 0


async def mark_read(ctx: Context, client: MedhubClient) -> int:
    """Mark a conversation as read (up to a message, or all of it)."""
    with refusals(**NOT_MEMBER):
        seq = await client.mark_read(
            ctx.args.conv, *(() if ctx.args.seq is None else (ctx.args.seq,))
        )
    say(f"read up to #{seq}" if seq else "nothing to mark as read yet")
    return 0


async def edit(ctx: Context, client: MedhubClient) -> int:
    """Change the text of one of my messages."""
    a = ctx.args
    with refusals(
        forbidden="you can only edit your own messages",
        not_found=f"no message #{a.seq} in that conversation, or you are not one of its members",
        bad_request=f"#{a.seq} cannot be edited (deleted, or not a message)",
    ):
        _, version = await client.edit_message(a.conv, a.seq, a.text)
    say(f"message #{a.seq} edited (version {version})")
    return 0


async def delete(ctx: Context, client: MedhubClient) -> int:
    """Delete one of my messages (the server keeps its earlier versions)."""
    a = ctx.args
    with refusals(
        forbidden="you can only delete your own messages",
        not_found=f"no message #{a.seq} in that conversation, or you are not one of its members",
        bad_request=f"#{a.seq} cannot be deleted (already deleted, or not a message)",
    ):
        await client.delete_message(a.conv, a.seq)
    say(f"message #{a.seq} deleted")
    return 0


# -- tail ------------------------------------------------------------------------------------
class TailPrinter:
    """Prints one conversation's events as people read them: ``[10:42] Name: text``
    (the date too when it is not today)."""

    def __init__(self, names: Names, as_json: bool) -> None:
        self.names, self.as_json = names, as_json
        self.texts: OrderedDict[int, str] = OrderedDict()

    def _quote(self, seq: int | None) -> str:
        text = self.texts.get(seq or 0)
        return f'"{text}"' if text is not None else f"message #{seq}"

    async def show(self, ev: TypedEvent) -> None:
        data = ev.data
        sender = data.sender if isinstance(data, ChatEvent) else None
        if sender is not None:
            await self.names.load([sender])
        if self.as_json:
            _json_line(_event_json(ev, self.names))
            return
        if not isinstance(data, ChatEvent):
            return  # typing, receipts: not shown as text
        when, who = f"[{short_stamp(data.at)}]", self.names(data.sender)
        if data.kind == "message":
            line = _message_line(data, self.names, when)
            if data.text is not None:
                self.texts[data.seq] = data.text
                while len(self.texts) > TAIL_MEMORY:
                    self.texts.popitem(last=False)
        elif data.kind == "edit":
            line = f"{when} {who} edited {self._quote(data.target)}: {data.text}"
            if data.target is not None and data.text is not None:
                self.texts[data.target] = data.text
        elif data.kind == "delete":
            line = f"{when} {who} deleted {self._quote(data.target)}"
        else:
            line = f"{when} {who}: ({data.kind})"
        say(line)


async def tail(ctx: Context, client: MedhubClient) -> int:
    """Print a conversation's messages as they come, until Ctrl-C (or the session ends)."""
    a = ctx.args
    with refusals(**NOT_MEMBER):
        if a.after is None:
            newest, _ = await client.history(a.conv, limit=1)
            a.after = max(0, (newest[-1].seq if newest else 0) - TAIL_BACKLOG)
        await client.follow(a.conv, after_seq=a.after)
    printer = TailPrinter(Names(client), a.json)
    channel = f"conv:{a.conv}"
    async for event in client.events():
        if event.ch == channel:
            await printer.show(event)
    return 0


# -- presence --------------------------------------------------------------------------------
async def presence(ctx: Context, client: MedhubClient) -> int:
    """Who is online among my contacts (or the people named)."""
    users = list(ctx.args.users) + list(ctx.args.user)
    states = await client.presence(users, contacts=not users)
    names = Names(client)
    await names.load({s.user for s in states})
    if ctx.args.json:
        for s in states:
            _json_line({**msgspec.to_builtins(s), "name": names(s.user)})
        return 0
    if not states:
        say("nobody to show: no contacts yet" if not users else "none of them is visible to you")
        return 0
    width = max(len(names(s.user)) for s in states)
    for s in sorted(states, key=lambda s: (names(s.user).casefold(), s.user)):
        seen = f" (last seen {stamp(s.last_seen)})" if s.last_seen else ""
        say(f"{names(s.user):<{width}}  {s.state + seen:<36}  {s.user}")
    return 0


def add_commands(add: AddCommand) -> None:
    """The chat commands of the ``medhub-chat`` parser."""
    p = add("conversations", "my conversations: who is in them, unread counts")
    p.set_defaults(run=connected(conversations))

    p = add("open", "open a conversation with one person (or a group: several, with --title)")
    p.add_argument("users", nargs="+", metavar="USER", help="user id (u-...) of each person")
    p.add_argument("--title", help="makes it a group conversation with this title")
    p.add_argument("--message", metavar="TEXT", help="also send this first message")
    p.set_defaults(run=connected(open_conversation))

    p = add("consult", "open the conversation of a consultation (and send a first message)")
    p.add_argument("consultation", metavar="CONSULTATION", help="the consultation's id")
    p.add_argument("message", nargs="?", metavar="MESSAGE", help="a message to send in it")
    p.set_defaults(run=connected(consult))

    p = add("send", "send a message to a conversation")
    p.add_argument("conv", metavar="CONV", help="the conversation id (c-...)")
    p.add_argument("text", metavar="TEXT", help="the message (quote it)")
    p.add_argument(
        "--id", dest="client_msg_id", metavar="ID",
        help="your id for this message: sending again with the same id never posts it twice",
    )  # fmt: skip
    p.set_defaults(run=connected(send))

    p = add("history", "show a page of a conversation's messages, oldest first")
    p.add_argument("conv", metavar="CONV", help="the conversation id (c-...)")
    page = p.add_mutually_exclusive_group()
    page.add_argument("--before", type=int, metavar="N", help="the messages before #N (older)")
    page.add_argument("--after", type=int, metavar="N", help="the messages after #N (newer)")
    p.add_argument(
        "--limit", type=int, default=20, metavar="COUNT",
        help="at most this many per page (1 to 500, default 20)",
    )  # fmt: skip
    p.set_defaults(run=connected(history))

    p = add("tail", "print a conversation's new messages as they come, until Ctrl-C")
    p.add_argument("conv", metavar="CONV", help="the conversation id (c-...)")
    p.add_argument(
        "--after", type=int, metavar="N",
        help=f"start after message #N (default: show the last {TAIL_BACKLOG} first)",
    )  # fmt: skip
    p.set_defaults(run=connected(tail))

    p = add("read", "mark a conversation as read")
    p.add_argument("conv", metavar="CONV", help="the conversation id (c-...)")
    p.add_argument("--seq", type=int, metavar="N", help="read up to #N only (default: all)")
    p.set_defaults(run=connected(mark_read))

    p = add("edit", "change the text of one of your messages")
    p.add_argument("conv", metavar="CONV", help="the conversation id (c-...)")
    p.add_argument("seq", type=int, metavar="N", help="the message's number (#N in history)")
    p.add_argument("text", metavar="TEXT", help="the new text")
    p.set_defaults(run=connected(edit))

    p = add("delete", "delete one of your messages")
    p.add_argument("conv", metavar="CONV", help="the conversation id (c-...)")
    p.add_argument("seq", type=int, metavar="N", help="the message's number (#N in history)")
    p.set_defaults(run=connected(delete))

    p = add("presence", "who is online: my contacts, or the people named")
    p.add_argument("users", nargs="*", metavar="USER", help="user ids (default: my contacts)")
    p.add_argument("--user", action="append", default=[], help=argparse.SUPPRESS)
    p.set_defaults(run=connected(presence))
