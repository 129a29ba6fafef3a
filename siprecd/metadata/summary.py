"""The JSON view of metadata that session.json carries: who took part, their numbers, and which
participants send on each stream label.

The real caller and callee numbers are often only in vendor extension data (BroadWorks
``callingPartyNumber``, Ribbon ``fromhdr``/``tohdr``, Acme ``callingParty`` and headers), so
the summary digs plausible phone numbers out of extension elements whose names suggest a
number, a party, ANI or DNIS, and out of the user part of tel:/sip: URIs.  The result is made
of dicts, lists, strings, booleans and None only, ready for ``json.dumps``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from siprecd.metadata.merge import MetadataState
from siprecd.metadata.model import Extension, Group, Participant, Recording, Session, Stream

# Name tokens (from camelCase/kebab/snake names) that suggest the value is a number or party.
_NUMBER_HINTS = frozenset(
    "number num nr caller callee calling called ani dnis phone msisdn dialed dialled digits "
    "from to fromhdr tohdr tel e164 cli clid cgpn cdpn party identity asserted pai ppi "
    "diversion redirecting origin originating destination dest user userid aor".split()
)
_CALLER_HINTS = frozenset("caller calling from fromhdr ani cgpn origin originating".split())
_CALLEE_HINTS = frozenset(
    "callee called to tohdr dnis cdpn dialed dialled destination dest".split()
)
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})

_TOKEN = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_URI_USER = re.compile(r"(?:sips?|tel):([^@;>\s,?]+)", re.IGNORECASE)
_BARE_USER = re.compile(r"(?:^|[\s<\"])([+\d][\d\-.()]*)@")
_PHONE = re.compile(r"^\+?[\d\s\-.()]+$")
_SEPARATORS = re.compile(r"[\s\-.()]")


def summarize(source: Recording | MetadataState | None) -> dict[str, Any]:
    """The session.json view of one document, or of a merged state with its history."""
    state: MetadataState | None = None
    if isinstance(source, MetadataState):
        state, source = source, source.current
    recording = source if source is not None else Recording()
    call_numbers = _call_numbers(recording)
    labels = _labels(recording)
    out: dict[str, Any] = {
        "datamode": recording.datamode,
        "dialect": recording.dialect,
        "recording_id": recording.recording_id,
        "groups": [
            {
                "group_id": g.group_id,
                "associate_time": g.associate_time,
                "disassociate_time": g.disassociate_time,
            }
            for g in recording.groups
        ],
        "sessions": [_session(recording, s.session_id) for s in recording.sessions],
        "participants": [
            _participant(recording, pid, call_numbers, labels)
            for pid in recording.participant_ids()
        ],
        "streams": [
            {
                "stream_id": s.stream_id,
                "label": s.label,
                "session_id": s.session_id,
                "content_type": s.content_type,
                "mode": s.mode,
                "sending_participants": list(recording.senders(s.stream_id)),
                "receiving_participants": list(recording.receivers(s.stream_id)),
            }
            for s in recording.streams
        ],
        "senders_by_label": senders_by_label(recording),
        "label_by_stream_id": labels,
        "numbers": call_numbers,
        "extensions": [
            {
                "kind": e.kind,
                "tag": e.tag,
                "namespace": e.namespace,
                "parent": e.parent,
                "xml": e.xml,
            }
            for e in recording.all_extensions()
        ],
        "warnings": list(recording.warnings),
    }
    if state is not None:
        out["history"] = _history(state)
    return out


def senders_by_label(recording: Recording) -> dict[str, list[str]]:
    """Stream label -> ids of the participants sending on it, through the associations only."""
    result: dict[str, list[str]] = {}
    for stream in recording.streams:
        if stream.label is None:
            continue
        senders = result.setdefault(stream.label, [])
        senders.extend(p for p in recording.senders(stream.stream_id) if p not in senders)
    return result


def numbers_in(value: str) -> list[str]:
    """Plausible phone numbers in a text: URI user parts, ``digits@host``, or a bare number."""
    candidates = _URI_USER.findall(value) + _BARE_USER.findall(value)
    if not candidates and _PHONE.match(value.strip()):
        candidates = [value.strip()]
    found: list[str] = []
    for candidate in candidates:
        number = _SEPARATORS.sub("", candidate)
        digits = number[1:] if number.startswith("+") else number
        if digits.isdigit() and 3 <= len(digits) <= 20 and number not in found:
            found.append(number)
    return found


def _tokens(path: str) -> list[set[str]]:
    """Per path step (leaf last), the lower-case word tokens of its name and qualifier."""
    steps = path.replace("@", "/").split("/")
    result = []
    for step in steps:
        words = {w.lower() for w in _TOKEN.findall(step)}
        words.add(re.sub(r"[^a-z0-9]", "", step.lower()))
        result.append(words)
    return result


def _role(steps: list[set[str]]) -> str | None:
    for words in reversed(steps):  # the leaf-most step that names a side decides
        caller, callee = bool(words & _CALLER_HINTS), bool(words & _CALLEE_HINTS)
        if caller != callee:
            return "caller" if caller else "callee"
    return None


def _extension_numbers(extensions: Iterable[Extension]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for ext in extensions:
        for path, value in ext.fields:
            steps = _tokens(path)
            if not any(words & _NUMBER_HINTS for words in steps):
                continue
            for number in numbers_in(value):
                entry = {"number": number, "role": _role(steps), "source": path}
                if not any(f["number"] == number and f["role"] == entry["role"] for f in found):
                    found.append(entry)
    return found


def _call_numbers(recording: Recording) -> list[dict[str, Any]]:
    """Numbers from extension data that no single participant owns (recording, group,
    session, stream level): BroadWorks and Ribbon put the call's parties there."""
    owners: tuple[Group | Session | Stream, ...] = (
        *recording.groups,
        *recording.sessions,
        *recording.streams,
    )
    return _extension_numbers([*recording.extensions, *(e for o in owners for e in o.extensions)])


def _same_number(a: str, b: str) -> bool:
    # +442077705371 and 02077705371 are the same line: compare without prefix and trunk zeros.
    x, y = a.lstrip("+").lstrip("0"), b.lstrip("+").lstrip("0")
    if x == y:
        return bool(x)
    short, long_ = sorted((x, y), key=len)
    return len(short) >= 7 and long_.endswith(short)


def _participant_role(
    participant: Participant | None, numbers: list[str], call_numbers: list[dict[str, Any]]
) -> str | None:
    if participant is not None:
        for ext in participant.extensions:
            for path, value in ext.fields:
                steps = _tokens(path)
                flag = value.strip().lower()
                if steps and steps[-1] & {"calling", "caller"} and flag in _TRUE | _FALSE:
                    # Acme: <apkt:callingParty>true</apkt:callingParty>
                    return "caller" if flag in _TRUE else "callee"
    roles = {
        entry["role"]
        for entry in call_numbers
        if entry["role"] and any(_same_number(entry["number"], n) for n in numbers)
    }
    return roles.pop() if len(roles) == 1 else None


def _participant(
    recording: Recording,
    participant_id: str,
    call_numbers: list[dict[str, Any]],
    labels: dict[str, str],
) -> dict[str, Any]:
    participant = recording.participant(participant_id)
    aors = list(participant.aors) if participant else []
    names = participant.display_names if participant else ()
    numbers: list[str] = []
    for aor in aors:
        numbers.extend(n for n in numbers_in(aor) if n not in numbers)
    if participant is not None:
        for entry in _extension_numbers(participant.extensions):
            if entry["number"] not in numbers:
                numbers.append(entry["number"])
    assocs = recording.session_assocs(participant_id)
    send = recording.sends(participant_id)
    return {
        "id": participant_id,
        "name": next((n.text for n in names if n.text), None),
        "names": [{"text": n.text, "lang": n.lang} for n in names],
        "aor": aors[0] if aors else None,
        "aors": aors,
        "numbers": numbers,
        "role": _participant_role(participant, numbers, call_numbers),
        "associate_time": next((a.associate_time for a in assocs if a.associate_time), None),
        "disassociate_time": (
            assocs[-1].disassociate_time
            if assocs and all(a.disassociate_time for a in assocs)
            else None
        ),
        "sessions": [
            {
                "session_id": a.session_id,
                "associate_time": a.associate_time,
                "disassociate_time": a.disassociate_time,
            }
            for a in assocs
        ],
        "send": list(send),
        "send_labels": [labels[s] for s in send if s in labels],
        "recv": list(recording.receives(participant_id)),
    }


def _session(recording: Recording, session_id: str) -> dict[str, Any]:
    session = recording.session(session_id)
    assert session is not None
    sra = next((a for a in recording.session_recording_assocs if a.session_id == session_id), None)
    return {
        "session_id": session_id,
        "sip_session_ids": list(session.sip_session_ids),
        "group_id": session.group_ref,
        "start_time": session.start_time,
        "stop_time": session.stop_time,
        "associate_time": sra.associate_time if sra else None,
        "disassociate_time": sra.disassociate_time if sra else None,
    }


def _labels(recording: Recording) -> dict[str, str]:
    return {s.stream_id: s.label for s in recording.streams if s.label is not None}


def _history(state: MetadataState) -> dict[str, Any]:
    # Streams may have left the current snapshot; label them from whichever document knew them.
    labels: dict[str, str] = {}
    for update in state.updates:
        labels.update(_labels(update.document))
    if state.current is not None:
        labels.update(_labels(state.current))
    return {
        "updates": [{"index": u.index, "datamode": u.datamode, "at": u.at} for u in state.updates],
        "sessions": [
            {
                "update": e.update,
                "at": e.at,
                "participant_id": e.participant_id,
                "session_id": e.session_id,
                "associate_time": e.associate_time,
                "disassociate_time": e.disassociate_time,
                "removed": e.removed,
            }
            for e in state.session_history
        ],
        "streams": [
            {
                "update": e.update,
                "at": e.at,
                "participant_id": e.participant_id,
                "send": list(e.send),
                "send_labels": [labels[s] for s in e.send if s in labels],
                "recv": list(e.recv),
            }
            for e in state.stream_history
        ],
    }
