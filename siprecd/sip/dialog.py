"""UAS dialogs (RFC 3261 §12): created by an INVITE, matched by Call-ID and tags."""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field
from typing import Any

from siprecd.errors import BadRequest, SIPError
from siprecd.sip.headers import Headers
from siprecd.sip.message import Request
from siprecd.sip.source import Source
from siprecd.sip.uri import URI


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


def new_tag() -> str:
    return secrets.token_hex(8)


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str  # the INVITE's To value (without tag): our From in requests we send
    remote_uri: str  # the INVITE's From value, tag included: our To in requests we send
    remote_target: URI
    route_set: list[str]
    remote_cseq: int
    source: Source  # where the dialog's requests arrive from (connection reuse for streams)
    local_cseq: int = 0
    state: DialogState = DialogState.EARLY
    invite_pending: bool = True
    ended_reason: str | None = None
    # The application's object for this dialog (the recording session).
    session: Any = field(default=None, repr=False)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    @property
    def secure(self) -> bool:
        return self.source.secure

    @classmethod
    def from_invite(cls, request: Request, source: Source) -> Dialog:
        contacts = request.contacts
        if len(contacts) > 1:
            raise BadRequest(f"INVITE must carry one Contact, found {len(contacts)}")
        # RFC 2543 INVITEs may lack Contact: the From URI is then the remote target.
        remote_target = contacts[0].uri if contacts else request.from_.uri
        remote_tag = request.from_.tag
        if not remote_tag:
            # RFC 2543 peers may omit it; a dialog still needs a stable remote identity.
            remote_tag = ""
        return cls(
            call_id=request.call_id,
            local_tag=new_tag(),
            remote_tag=remote_tag,
            local_uri=request.headers.get("To") or "",
            remote_uri=request.headers.get("From") or "",
            remote_target=remote_target,
            route_set=list(request.headers.get_list("Record-Route")),
            remote_cseq=request.cseq.number,
            source=source,
        )

    def check_in_dialog(self, request: Request) -> None:
        """RFC 3261 §12.2.2: CSeq must grow; target refresh for (re-)INVITE and UPDATE."""
        if request.method in ("ACK", "CANCEL"):
            return
        if request.cseq.number <= self.remote_cseq:
            raise SIPError(
                f"CSeq {request.cseq.number} is not above the dialog's {self.remote_cseq}",
                code=500,
            )
        self.remote_cseq = request.cseq.number
        if request.method in ("INVITE", "UPDATE") and request.contacts:
            self.remote_target = request.contacts[0].uri

    def request_headers(self, method: str, via: str) -> Headers:
        """Headers of a request the SRS sends inside this dialog (§12.2.1.1)."""
        self.local_cseq = max(self.local_cseq, 0) + 1
        headers = Headers()
        headers.add("Via", via)
        headers.add("Max-Forwards", "70")
        for route in self.route_set:
            headers.add("Route", route)
        headers.add("From", f"{self.local_uri};tag={self.local_tag}")
        headers.add("To", self.remote_uri)
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{self.local_cseq} {method}")
        return headers


class DialogTable:
    def __init__(self) -> None:
        self._dialogs: dict[tuple[str, str, str], Dialog] = {}

    def __len__(self) -> int:
        return len(self._dialogs)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._dialogs.values()))

    def add(self, dialog: Dialog) -> None:
        self._dialogs[dialog.key] = dialog

    def remove(self, dialog: Dialog) -> None:
        if self._dialogs.get(dialog.key) is dialog:
            del self._dialogs[dialog.key]

    def get(self, key: tuple[str, str, str]) -> Dialog | None:
        return self._dialogs.get(key)

    def find(self, request: Request) -> Dialog | None:
        """The dialog of an in-dialog request: our tag is in To, theirs in From."""
        local = request.to.tag or ""
        remote = request.from_.tag or ""
        return self._dialogs.get((request.call_id, local, remote))
