"""RFC 3891 Replaces: an INVITE that replaces a dialog takes its recording session over.

The dialog named by the Replaces header (Call-ID, to-tag = our tag, from-tag = the SRC's) is
looked up on this node first; with a shared store (Redis) a dialog of another node whose lease
has run out (the node is dead) is found there.  The session keeps its ``session_id``; its
recording goes on (same files here, a new segment after another node); the replaced dialog is
ended with a BYE when it is live here.  No such dialog: 481 (§3).  ``early-only`` is honoured
trivially: an SRS has no early dialogs to replace, a confirmed one makes it 486 (§3).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger

from siprecd.errors import BadRequest, SIPError
from siprecd.recording.session import iso_utc
from siprecd.security.carried import carried_counters
from siprecd.sip.dialog import Dialog
from siprecd.sip.message import Request, ResponseSpec
from siprecd.sip.multipart import BodyPart
from siprecd.state.record import open_security, srtp_indices
from siprecd.state.sealing import SealError

if TYPE_CHECKING:
    from siprecd.siprec.controller import Controller

log = Logger()

DialogKey = tuple[str, str, str]


def parse_replaces(value: str) -> tuple[DialogKey, bool]:
    """``callid;to-tag=X;from-tag=Y[;early-only]`` -> ((call-id, to-tag, from-tag), early_only)."""
    call_id, *params = [item.strip() for item in value.split(";")]
    tags: dict[str, str] = {}
    early_only = False
    for param in params:
        name, _, tag = param.partition("=")
        name = name.strip().lower()
        if name in ("to-tag", "from-tag"):
            tags[name] = tag.strip().strip('"')
        elif name == "early-only":
            early_only = True
    if not call_id or "to-tag" not in tags or "from-tag" not in tags:
        raise BadRequest(f"Replaces header {value!r} needs a Call-ID, to-tag and from-tag (RFC 3891 §6.1)")
    return (call_id, tags["to-tag"], tags["from-tag"]), early_only


def not_found(key: DialogKey, where: str) -> SIPError:
    return SIPError(
        f"Call/Transaction Does Not Exist: Replaces names no dialog {where} (Call-ID {key[0]})", code=481
    )


class Takeovers:
    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    def replace(
        self, request: Request, dialog: Dialog, value: str, parts: list[BodyPart], offer_part: BodyPart
    ) -> ResponseSpec | Deferred[ResponseSpec]:
        key, early_only = parse_replaces(value)
        c = self.controller
        assert c.stack is not None
        old = c.stack.core.dialogs.get(key)
        if old is not None and old.session is not None and old.ended_reason is None:
            if early_only:
                raise SIPError("Busy Here: the dialog to replace is confirmed (early-only)", code=486)
            return self._local(request, dialog, old)
        lookup = getattr(c.store, "find_dialog", None)
        if lookup is None:
            raise not_found(key, "on this node")

        def found(result: tuple[dict[str, Any] | None, bool]) -> ResponseSpec:
            record, owner_alive = result
            if record is None:
                raise not_found(key, "on this node or in the shared state store")
            live = c.calls.get(record.get("session_id", ""))
            if live is not None:  # recording here already (under its current dialog)
                return self._local(request, dialog, live.dialog)
            if owner_alive and record.get("node") != c.node_id:
                raise SIPError(
                    f"Call/Transaction Does Not Exist here: the dialog is live on node {record.get('node')}",
                    code=481,
                )
            return self._remote(request, dialog, record, parts, offer_part)

        return maybeDeferred(lookup, key).addCallback(found)

    def _local(self, request: Request, dialog: Dialog, old: Dialog) -> ResponseSpec:
        """The session moves to the new dialog; the old one gets a BYE (it no longer records).
        A new offer that fails leaves the session on the old dialog, as it was."""
        c = self.controller
        assert c.stack is not None
        call = old.session
        session = call.session
        old.session, call.dialog, dialog.session = None, dialog, call
        previous_call_id, session.call_id = session.call_id, request.call_id
        session.resumptions.append(
            {
                "at": iso_utc(c.clock.seconds()),
                "how": "replaces",
                "node": c.node_id,
                "previous_node": c.node_id,
                "segment": call.media.segment,
                "outage_seconds": 0.0,
                "call_id": request.call_id,
            }
        )
        try:
            response = c.reoffer(request, dialog)
        except BaseException:
            old.session, call.dialog, dialog.session = call, old, None
            session.call_id = previous_call_id
            session.resumptions.pop()
            raise
        log.info(
            "recording session {session_id}: dialog {old} replaced by {new} (RFC 3891)",
            session_id=session.session_id, call_id=session.call_id, old=old.call_id, new=dialog.call_id,
        )
        c.stack.core.hang_up(old, "replaced (RFC 3891)")
        self._forget(old.key)
        return response

    def _remote(
        self, request: Request, dialog: Dialog, record: dict[str, Any], parts: list[BodyPart], offer_part: BodyPart
    ) -> ResponseSpec:
        c = self.controller
        session, media, streams = c.resumer.takeover(record, dialog)
        session.call_id = session.resumptions[-1]["call_id"] = request.call_id
        segments = {s["key"]: s["segments"] for s in record["streams"]}
        answer = c.start_call(
            session, media, streams, request, dialog, parts, offer_part, create=False, segments=segments,
            carried=self._carried_security(record),
        )
        c.resumer.announce(session)
        d = record["dialog"]
        self._forget((d["call_id"], d["local_tag"], d["remote_tag"]))
        return c.answer_when_saved(session, answer)  # type: ignore[return-value]

    def _carried_security(self, record: dict[str, Any]) -> dict[str, Any]:
        """The dead node's SRTP agreements per stream, for an offer that repeats their keys.
        One that cannot be opened is left out (said): the offer is then negotiated afresh."""
        c = self.controller
        out: dict[str, Any] = {}
        for stored in record["streams"]:
            try:
                state = open_security(record["session_id"], stored, c.sealer)
                if state is not None:
                    counters = carried_counters(state, srtp_indices(record, stored["key"]), "replaces")
                    out[stored["key"]] = c.security.rebuild(state, counters)
            except (SealError, ValueError) as error:
                log.warn(
                    "recording session {session_id}: SRTP of stream {stream} not carried over: {error}",
                    session_id=record["session_id"], stream=stored["key"], error=error,
                )
        return out

    def _forget(self, key: DialogKey) -> None:
        forget = getattr(self.controller.store, "forget_dialog", None)
        if forget is not None:
            forget(key)
