"""A recording session as the state store keeps it, and back.

The record holds what it takes to carry the call on elsewhere or later: the dialog (Call-ID,
tags, CSeq numbers, route set, remote target, transport), the last offer and answer, every
stream's negotiated choice, ports and file segments, the metadata documents received, and the
session's identity and times.  Secrets are sealed (:mod:`siprecd.state.sealing`): each stream's
``security`` dict (the SRTP keys the media layer reports through ``security_state()``) always,
the metadata documents when ``[encryption] encrypt_metadata`` is on.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from siprecd.recording.session import MetadataVersion, RecordedStream, RecordingSession
from siprecd.sdp import StreamChoice
from siprecd.sip.dialog import Dialog, DialogState
from siprecd.sip.source import Source
from siprecd.sip.uri import parse_uri
from siprecd.state.sealing import NO_KEY_STORE, Sealer, SealError

VERSION = 1


def dialog_record(dialog: Dialog) -> dict[str, Any]:
    source = dialog.source
    return {
        "call_id": dialog.call_id,
        "local_tag": dialog.local_tag,
        "remote_tag": dialog.remote_tag,
        "local_uri": dialog.local_uri,
        "remote_uri": dialog.remote_uri,
        "remote_target": str(dialog.remote_target),
        "route_set": list(dialog.route_set),
        "remote_cseq": dialog.remote_cseq,
        "local_cseq": dialog.local_cseq,
        "transport": source.transport,
        "host": source.host,
        "port": source.port,
    }


def restore_dialog(record: dict[str, Any], sealer: Sealer | None = None, session_id: str = "") -> Dialog:
    """The dialog again, confirmed; a stream connection does not survive: requests the SRS
    sends go to the route set or remote target (a new connection)."""
    if "sealed" in record:
        if sealer is None:
            raise SealError(f"{session_id}/dialog: sealed, and no key store to open it")
        record = sealer.open(record["sealed"], f"{session_id}/dialog")
    return Dialog(
        call_id=record["call_id"],
        local_tag=record["local_tag"],
        remote_tag=record["remote_tag"],
        local_uri=record["local_uri"],
        remote_uri=record["remote_uri"],
        remote_target=parse_uri(record["remote_target"]),
        route_set=list(record["route_set"]),
        remote_cseq=int(record["remote_cseq"]),
        source=Source(record["transport"], record["host"], int(record["port"])),
        local_cseq=int(record["local_cseq"]),
        state=DialogState.CONFIRMED,
        invite_pending=False,
    )


def stream_security(stream: RecordedStream) -> dict[str, Any] | None:
    """The media layer's SRTP state (``StreamMedia.security_state()``), if any."""
    return stream.media.security_state() if stream.media is not None else None


def stream_record(session_id: str, stream: RecordedStream, sealer: Sealer) -> dict[str, Any]:
    recorder = stream.recorder
    security = stream_security(stream)
    out: dict[str, Any] = {
        "key": stream.key,
        # The agreement holds keys: it is stored only sealed, under "security" (never in clear).
        "choice": dataclasses.asdict(dataclasses.replace(stream.choice, security=None)),
        "rtp_port": stream.ports.rtp_port if stream.ports else None,
        "ended": stream.ended,
        "segments": stream.segments + ([recorder.file] if recorder is not None else []),
        "security": None,
    }
    if security is not None:
        sealed = sealer.seal(security, f"{session_id}/{stream.key}/security")
        out["security"] = sealed if sealed is not None else {"unavailable": NO_KEY_STORE}
    return out


def restore_stream(record: dict[str, Any]) -> RecordedStream:
    stream = RecordedStream(key=record["key"], choice=StreamChoice(**record["choice"]), ended=record["ended"])
    stream.segments = list(record["segments"])
    return stream


def session_record(
    session: RecordingSession,
    dialog: Dialog,
    *,
    offer: bytes,
    answer: bytes,
    metadata: list[dict[str, Any]],
    mix_segments: list[str],
    sealer: Sealer,
    encrypt_private: bool,
    node: str,
    now: float,
) -> dict[str, Any]:
    private: Any = metadata
    sip: Any = session.sip
    dialog_state = dialog_record(dialog)
    if encrypt_private:
        # The identifiers stay readable (the cluster's dialog index); the URIs are sealed.
        dialog_state = {
            "call_id": dialog.call_id,
            "local_tag": dialog.local_tag,
            "remote_tag": dialog.remote_tag,
            "sealed": sealer.seal(dialog_state, f"{session.session_id}/dialog"),
        }
        # [encryption] encrypt_metadata: who called whom is not in clear in the store either.
        private = sealer.seal(metadata, f"{session.session_id}/metadata")
        sip = {"sealed": sealer.seal(session.sip, f"{session.session_id}/sip")}
    return {
        "version": VERSION,
        "node": node,
        "updated_at": now,
        "session_id": session.session_id,
        "call_id": session.call_id,
        "started_at": session.started_at,
        "src": session.src,
        "sip": sip,
        "siprec": session.siprec,
        "directory": session.directory,
        "sdp_session_id": session.sdp_session_id,
        "sdp_version": session.sdp_version,
        "sdp_files": list(session.sdp_files),
        "metadata_versions": [dataclasses.asdict(v) for v in session.metadata_versions],
        "metadata": {"sealed": private} if encrypt_private else {"documents": private},
        "resumptions": list(session.resumptions),
        "dialog": dialog_state,
        "offer": stored_sdp(offer, f"{session.session_id}/offer", sealer),
        "answer": stored_sdp(answer, f"{session.session_id}/answer", sealer),
        "streams": [stream_record(session.session_id, s, sealer) for s in session.streams],
        "mix_segments": mix_segments,
    }


_CRYPTO = re.compile(rb"^(a=(?:crypto:\S+\s+\S+|key-mgmt:\S+)\s+)(\S+)", re.MULTILINE)


def stored_sdp(body: bytes, context: str, sealer: Sealer) -> Any:
    """SDP as the record holds it: SDES keys (``a=crypto``) and MIKEY (``a=key-mgmt``) are key
    material, so an SDP with them is sealed, or without a key store stored with the keys cut
    out (that session's SRTP cannot be resumed then, and resuming it says so)."""
    if not _CRYPTO.search(body):
        return body.decode("utf-8", "replace")
    sealed = sealer.seal(body.decode("utf-8", "replace"), context)
    if sealed is not None:
        return {"sealed": sealed}
    return {"redacted": _CRYPTO.sub(rb"\1<not stored>", body).decode("utf-8", "replace"), "why": NO_KEY_STORE}


def open_sdp(value: Any, context: str, sealer: Sealer) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if "sealed" in value:
        return str(sealer.open(value["sealed"], context)).encode()
    raise SealError(f"{context}: SDP keys were not stored ({value.get('why')}): SRTP cannot be resumed")


def open_security(session_id: str, stored: dict[str, Any], sealer: Sealer) -> dict[str, Any] | None:
    """A stored stream's SRTP state in clear (None: plain RTP); SealError if it cannot be."""
    security = stored.get("security")
    if security is None:
        return None
    context = f"{session_id}/{stored['key']}/security"
    if "unavailable" in security:
        raise SealError(f"{context}: {security['unavailable']}: SRTP cannot be resumed")
    state: dict[str, Any] = sealer.open(security, context)
    return state


def srtp_indices(record: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The stream's last periodic SRTP indices (highest index per SSRC, SRTCP index)."""
    return ((record.get("positions") or {}).get("srtp") or {}).get(key)


def restore_security(
    session_id: str,
    stream: RecordedStream,
    stored: dict[str, Any],
    sealer: Sealer,
    *,
    indices: dict[str, Any] | None = None,
    how: str = "restart",
) -> None:
    """Give a resumed stream its SRTP agreement and contexts back through the media layer's
    hook (``StreamMedia.restore_security``), with the last positions' SRTP ``indices``; the
    stream's choice carries the agreement on, so a re-offer with the same keys keeps it."""
    state = open_security(session_id, stored, sealer)
    if state is None:
        return
    context = f"{session_id}/{stream.key}/security"
    hook = getattr(stream.media, "restore_security", None)
    if not callable(hook):
        raise SealError(f"{context}: the stream had SRTP state but this build cannot restore it")
    try:
        negotiated = hook(state, indices=indices, how=how)
    except ValueError as error:
        raise SealError(f"{context}: {error}") from None
    if negotiated is not None:
        stream.choice = dataclasses.replace(stream.choice, security=negotiated)


def metadata_documents(record: dict[str, Any], sealer: Sealer) -> list[dict[str, Any]]:
    stored = record.get("metadata") or {}
    if "sealed" in stored:
        return sealer.open(stored["sealed"], f"{record['session_id']}/metadata")  # type: ignore[no-any-return]
    return list(stored.get("documents") or [])


def restore_session(record: dict[str, Any], directory: str, sealer: Sealer) -> RecordingSession:
    sip = record["sip"]
    if isinstance(sip, dict) and "sealed" in sip:
        sip = sealer.open(sip["sealed"], f"{record['session_id']}/sip")
    session = RecordingSession(
        session_id=record["session_id"],
        call_id=record["call_id"],
        started_at=float(record["started_at"]),
        src=record["src"],
        sip=sip,
        siprec=record["siprec"],
        directory=directory,
        sdp_session_id=int(record["sdp_session_id"]),
        sdp_version=int(record["sdp_version"]),
    )
    session.sdp_files = list(record["sdp_files"])
    session.metadata_versions = [MetadataVersion(**v) for v in record["metadata_versions"]]
    session.resumptions = list(record.get("resumptions", []))
    return session

