"""One active flow per person: who owns a person's next message, and pausing a flow.

A *flow* is one of the bot's persistent conversations (``handlers.common.conversation``
builds them as :class:`Flow`). python-telegram-bot lets every ConversationHandler keep its
own state per person, so without a rule a step left half-way in one conversation would
swallow text meant for another. The rule, applied after every update (:meth:`Flows.settle`):

* The flow that handled an update and is still active afterwards owns the person's next
  message: every other flow of that person ends (its ``on_end`` hook runs: a timed exercise
  stops its timer and is logged as stopped early), and a paused flow is dropped.
* A known command after which no flow is active (``/learn``, ``/mydata``, or ``/start`` with
  another therapist's link, which a flow answers and ends at once) ends the person's flow
  too, except the commands that only look something up in between (:data:`INTERJECTIONS`:
  ``/help``, ``/about``): they leave the flow as it was, or pause it (``/help`` does).
* Anything else (a stray message, an old message's button) leaves the flow alone.

Pausing (:meth:`Flows.pause`) takes the person's active flow out of its conversation (so it
sees nothing while paused), keeps its state in ``conversation_states`` under
:data:`PAUSED_NAME` (state names only, like all conversation states; a restart keeps it),
and runs its ``on_pause`` hook (a timed exercise stops its timer where it was).
:meth:`Flows.resume` puts the state back and runs ``on_resume`` (the step is shown again);
:meth:`Flows.end_paused` ends it. At most one flow is paused per person: pausing another
ends the one paused before.

This module touches two private attributes of python-telegram-bot's ConversationHandler
(``_conversations`` and ``_update_state``), here and nowhere else; tests/test_flows.py fails
if a python-telegram-bot release changes them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar

from telegram import MessageEntity, Update
from telegram.ext import Application, BaseHandler, CommandHandler, ConversationHandler

from bot.db.repositories import ConversationKey, ConversationStateRepository

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from bot.context import BotContext

_log = logging.getLogger(__name__)

FLOWS_KEY = "flows"  # bot_data: the application's Flows
PAUSED_NAME = "flows:paused"  # conversation_states.name of paused flows
INTERJECTIONS = frozenset({"help", "about"})  # commands that never end a flow

Hook = Callable[[Update, "BotContext", Any], Awaitable[None]]


DraftT = TypeVar("DraftT", bound="DataclassInstance")


@dataclass(frozen=True)
class TypedDrafts(Generic[DraftT]):
    """A flow's draft as its own dataclass (``Flows`` keeps plain dicts under ``draft:<flow>``,
    so that a pause or a restart loses no choice): ``get``, ``keep`` and ``drop`` for the
    person an update is from."""

    flow: str
    kind: Callable[..., DraftT]

    async def get(self, update: Update, context: BotContext) -> DraftT | None:
        stored = await context.flows.draft(update, context, self.flow)
        return None if stored is None else self.kind(**stored)

    async def keep(self, update: Update, context: BotContext, draft: DraftT) -> None:
        await context.flows.keep_draft(update, context, self.flow, asdict(draft))

    async def drop(self, update: Update, context: BotContext) -> None:
        await context.flows.drop_draft(update, context, self.flow)


@dataclass(frozen=True)
class FlowHooks:
    """What a flow does when the rule or a pause acts on it (each gets the flow's state).

    ``on_end``: ended by another flow or command (not by its own /cancel or stop: its own
    fallbacks handle those). ``on_pause``: about to be paused. ``on_resume``: its state is
    back; show the step again. Without ``on_resume`` the person is told to answer the last
    question above (``flows.resumed``)."""

    on_end: Hook | None = None
    on_pause: Hook | None = None
    on_resume: Hook | None = None
    keeps_draft: bool = False  # its draft (Flows.draft) ends with it
    # A short flow inside a pause (a note for the therapist): it leaves the paused flow
    # paused, and a pause ends it rather than pausing it.
    interlude: bool = False


class Flow(ConversationHandler):
    """A ConversationHandler that tells the flow rule it handled an update."""

    def __init__(self, *args: Any, hooks: FlowHooks | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._name is None:
            raise ValueError("a flow needs a name: its state is persisted under it")
        self.hooks = hooks or FlowHooks()

    @property
    def name(self) -> str:
        assert self._name is not None  # checked in __init__
        return self._name

    @name.setter
    def name(self, _: object) -> NoReturn:
        raise AttributeError("You can not assign a new value to name after initialization.")

    async def handle_update(self, update, application, check_result, context):
        handled_by(context, self.name)
        return await super().handle_update(update, application, check_result, context)

    def state_of(self, key: ConversationKey) -> object | None:
        return self._conversations.get(key)

    def set_state(self, key: ConversationKey, state: object) -> None:
        """Set (or, with ``ConversationHandler.END``, remove) a state; tracked, so the next
        ``update_persistence`` writes it through."""
        self._update_state(state, key)


def handled_by(context: BotContext, name: str | None) -> None:
    context.flow_handled = name


@dataclass(frozen=True)
class Paused:
    flow: str
    state: object


@dataclass
class Flows:
    """The application's flows, in registration order, and the rule that governs them."""

    flows: dict[str, Flow] = field(default_factory=dict)
    commands: set[str] = field(default_factory=set)  # every command some handler answers
    _paused: set[ConversationKey] | None = field(default=None, init=False, repr=False)  # keys with a paused flow

    @classmethod
    def of(cls, application: Application) -> Flows:
        return application.bot_data[FLOWS_KEY]

    @classmethod
    def install(cls, application: Application, handlers: Iterable[BaseHandler]) -> Flows:
        """Collect the flows and commands among ``handlers`` (the main group's)."""
        flows = cls()
        for handler in handlers:
            flows._collect(handler)
        application.bot_data[FLOWS_KEY] = flows
        return flows

    def _collect(self, handler: BaseHandler) -> None:
        if isinstance(handler, CommandHandler):
            self.commands.update(handler.commands)
        elif isinstance(handler, ConversationHandler):
            if isinstance(handler, Flow):
                assert handler.name is not None and handler.name not in self.flows, handler.name
                self.flows[handler.name] = handler
            inner = [*handler.entry_points, *handler.fallbacks]
            inner += [h for state in handler.states.values() for h in state]
            for each in inner:
                self._collect(each)

    # -- looking ---------------------------------------------------------------------------

    @staticmethod
    def key_of(update: Update) -> ConversationKey | None:
        """The conversation key python-telegram-bot uses (per chat and per user)."""
        if update.effective_chat is None or update.effective_user is None:
            return None
        return (update.effective_chat.id, update.effective_user.id)

    @classmethod
    def key_in(cls, update: Update) -> ConversationKey:
        """``key_of`` an update a handler got in a private chat: it has a chat and a user."""
        key = cls.key_of(update)
        if key is None:
            raise ValueError("an update without a chat or a user has no conversation key")
        return key

    def active(self, key: ConversationKey) -> list[tuple[Flow, object]]:
        return [(flow, state) for flow in self.flows.values() if (state := flow.state_of(key)) is not None]

    def command_of(self, update: Update) -> str | None:
        """The command an update's message starts with (without the bot's @name), if any."""
        message = update.message
        if message is None or not message.text or not message.entities:
            return None
        first = message.entities[0]
        if first.type != MessageEntity.BOT_COMMAND or first.offset != 0:
            return None
        return message.text[1 : first.length].split("@", 1)[0].lower()

    # -- the rule --------------------------------------------------------------------------

    async def settle(self, update: Update, context: BotContext) -> None:
        """After an update: apply the one-active-flow rule (see the module docstring)."""
        key = self.key_of(update)
        if key is None:
            return
        owner_name = getattr(context, "flow_handled", None)
        owner = self.flows.get(owner_name) if owner_name else None
        if owner is not None and owner.state_of(key) is not None:
            for flow, state in self.active(key):
                if flow is not owner:
                    await self._end(update, context, flow, key, state)
            if not owner.hooks.interlude:
                await self.end_paused(update, context)
            return
        # No flow holds the person now: a flow that handled the update ended at once (or
        # refused to begin), or none handled it. Text and buttons change nothing; a command
        # (e.g. /start with another therapist's link) ends whatever was left half-way.
        command = self.command_of(update)
        if command is not None and command in self.commands and command not in INTERJECTIONS:
            for flow, state in self.active(key):
                await self._end(update, context, flow, key, state)
            await self.end_paused(update, context)

    async def _end(self, update: Update, context: BotContext, flow: Flow, key: ConversationKey, state: object) -> None:
        flow.set_state(key, ConversationHandler.END)
        await self._ended(update, context, flow, state)

    async def _ended(self, update: Update, context: BotContext, flow: Flow, state: object) -> None:
        if flow.hooks.keeps_draft:
            await self.drop_draft(update, context, flow.name)
        if flow.hooks.on_end is not None:
            await flow.hooks.on_end(update, context, state)

    async def end_active(self, update: Update, context: BotContext) -> list[str]:
        """End the person's active flows (their ``on_end`` hooks run); their names."""
        key = self.key_of(update)
        if key is None:
            return []
        ended: list[str] = []
        for flow, state in self.active(key):
            await self._end(update, context, flow, key, state)
            ended.append(flow.name)
        return ended

    # -- pausing ---------------------------------------------------------------------------

    async def pause(self, update: Update, context: BotContext) -> Paused | None:
        """Suspend the person's active flow (None when there is none)."""
        key = self.key_of(update)
        active = self.active(key) if key else []
        if key is None or not active:
            return None
        flow, state = active[0]
        for other, other_state in active[1:]:  # more than one: the first in order wins
            await self._end(update, context, other, key, other_state)
        if flow.hooks.interlude:  # a note inside a pause: it ends, what was paused stays so
            await self._end(update, context, flow, key, state)
            return None
        await self.end_paused(update, context)
        if flow.hooks.on_pause is not None:
            await flow.hooks.on_pause(update, context, state)
        flow.set_state(key, ConversationHandler.END)
        paused = Paused(flow.name, state)
        await self._store(context, key, {"flow": flow.name, "state": state})
        _log.info("Paused flow %s", flow.name)
        return paused

    async def paused(self, update: Update, context: BotContext) -> Paused | None:
        key = self.key_of(update)
        if key is None or key not in await self._paused_keys(context):
            return None
        async with context.services.sessions() as session:
            stored = await ConversationStateRepository(session).get(PAUSED_NAME, key)
        if not isinstance(stored, dict) or stored.get("flow") not in self.flows:
            return None
        if stored.get("state") not in self.flows[stored["flow"]].states:
            return None  # a state that no longer exists (a newer version of the bot)
        return Paused(stored["flow"], stored["state"])

    async def resume(self, update: Update, context: BotContext) -> Paused | None:
        """Put the paused flow back where it was and show its step again (None: nothing was
        paused). A flow begun meanwhile ends first."""
        paused = await self.paused(update, context)
        key = self.key_of(update)
        if paused is None or key is None:
            return None
        await self.end_active(update, context)
        await self._store(context, key, None)
        flow = self.flows[paused.flow]
        flow.set_state(key, paused.state)
        handled_by(context, flow.name)  # it owns the person's next message again
        _log.info("Resumed flow %s", flow.name)
        if flow.hooks.on_resume is not None:
            await flow.hooks.on_resume(update, context, paused.state)
        else:
            from handlers.common import say  # the generic words of resuming

            await say(update, context, "flows.resumed")
        return paused

    async def forget_paused(self, update: Update, context: BotContext) -> None:
        """Let the paused flow go without its ``on_end`` hook (its owner may no longer use it:
        nothing of it is shown or done)."""
        key = self.key_of(update)
        if key is not None and key in await self._paused_keys(context):
            await self._store(context, key, None)
            _log.info("Forgot a paused flow its owner may no longer enter")

    async def end_paused(self, update: Update, context: BotContext) -> Paused | None:
        """End the paused flow, if any (its ``on_end`` hook runs)."""
        paused = await self.paused(update, context)
        key = self.key_of(update)
        if key is None or key not in await self._paused_keys(context):
            return None
        await self._store(context, key, None)
        if paused is not None:
            await self._ended(update, context, self.flows[paused.flow], paused.state)
        return paused

    # -- drafts: what a flow has gathered so far (no clinical content: choices, ids) --------

    async def draft(self, update: Update, context: BotContext, flow: str) -> dict[str, Any] | None:
        """The person's draft in ``flow``, kept in ``conversation_states`` under
        ``draft:<flow>`` so that a restart or a pause loses nothing."""
        key = self.key_of(update)
        if key is None:
            return None
        async with context.services.sessions() as session:
            stored = await ConversationStateRepository(session).get(f"draft:{flow}", key)
        return stored if isinstance(stored, dict) else None

    async def keep_draft(self, update: Update, context: BotContext, flow: str, draft: dict[str, Any]) -> None:
        key = self.key_of(update)
        assert key is not None
        async with context.services.sessions.begin() as session:
            await ConversationStateRepository(session).save(f"draft:{flow}", key, draft)

    async def cancelled(self, update: Update, context: BotContext) -> None:
        """The flow that handled this update ended itself (/cancel, a stop word): its draft goes."""
        flow = self.flows.get(getattr(context, "flow_handled", None) or "")
        if flow is not None and flow.hooks.keeps_draft:
            await self.drop_draft(update, context, flow.name)

    async def drop_draft(self, update: Update, context: BotContext, flow: str) -> None:
        key = self.key_of(update)
        if key is None:
            return
        async with context.services.sessions.begin() as session:
            await ConversationStateRepository(session).save(f"draft:{flow}", key, None)

    # -- which people have a paused flow: known in memory, so the rule costs no query -------

    async def _paused_keys(self, context: BotContext) -> set[ConversationKey]:
        keys = self._paused
        if keys is None:  # a local: forget_cache() may run while this one awaits the database
            async with context.services.sessions() as session:
                keys = set(await ConversationStateRepository(session).load(PAUSED_NAME))
            self._paused = keys
        return keys

    def forget_cache(self) -> None:
        """Read paused flows from the database again (this instance starts consuming updates:
        another instance may have paused or resumed flows meanwhile)."""
        self._paused = None

    async def _store(self, context: BotContext, key: ConversationKey, value: dict[str, Any] | None) -> None:
        keys = await self._paused_keys(context)
        async with context.services.sessions.begin() as session:
            await ConversationStateRepository(session).save(PAUSED_NAME, key, value)
        if value is None:
            keys.discard(key)
        else:
            keys.add(key)
