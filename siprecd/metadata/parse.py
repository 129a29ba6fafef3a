"""A hardened, dialect-tolerant parser: rs-metadata bytes in, :class:`Recording` out.

SRCs in the field send RFC 7865 (``urn:ietf:params:xml:ns:recording:1``), late drafts
(``...:recording`` with ``id``/``session`` attributes and ``<send>`` inside ``<participant>``),
an early draft (``<recording_metadata xmlns="urn:ietf:params:xml:ns:siprec">`` with ``<aor>`` and
``<send><id>``), prefixed elements, no namespace at all, and ``dataMode``/``nameId`` spellings.
Names are therefore matched on a folded key (case, ``-`` and ``_`` ignored) and ids on both the
RFC and the draft attribute names.  Anything not understood is kept as an :class:`Extension`.

The body comes from the network: DOCTYPEs are refused before libxml2 sees them (libxml2 expands
entities inside attribute values even with ``resolve_entities=False``), nothing is fetched, and
size is bounded.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from typing import Any

from lxml import etree

from siprecd.metadata.model import (
    DataMode,
    Extension,
    ExtensionKind,
    Group,
    MetadataError,
    Name,
    NameID,
    Participant,
    ParticipantSessionAssoc,
    ParticipantStreamAssoc,
    Recording,
    Session,
    SessionRecordingAssoc,
    Stream,
)

DEFAULT_MAX_SIZE = 1 << 20  # 1 MiB: real documents are a few KiB

RECORDING_NAMESPACES: dict[str, str] = {
    "urn:ietf:params:xml:ns:recording:1": "rfc7865",
    "urn:ietf:params:xml:ns:recording": "draft",
    "urn:ietf:params:xml:ns:siprec": "early-draft",
}

_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_BOM = b"\xef\xbb\xbf"
_DOCTYPE_PATTERNS = tuple(
    ("<!DOCTYPE".encode(codec), codec == "ascii")
    for codec in ("ascii", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be")
)
_LXML_WHERE = re.compile(r",\s*line \d+, column \d+\s*$")


def parse_metadata(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> Recording:
    """Parse one rs-metadata body; raise :class:`MetadataError` saying what and where."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"metadata must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_size:
        raise MetadataError(f"metadata is {len(data)} bytes, over the {max_size} byte limit")
    # Some SRCs put whitespace (even after a BOM) before <?xml, which XML forbids; line numbers
    # in messages still count from the start of the body as received.
    body = data[len(_BOM) :] if data.startswith(_BOM) else data
    stripped = body.lstrip(b" \t\r\n")
    line_offset = body[: len(body) - len(stripped)].count(b"\n")
    if not stripped:
        raise MetadataError("metadata body is empty")
    _refuse_doctype(stripped, line_offset)
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        collect_ids=False,
    )
    try:
        root = etree.fromstring(stripped, parser)
    except etree.XMLSyntaxError as exc:
        line, column = exc.position if exc.position else (exc.lineno or 0, 0)
        message = _LXML_WHERE.sub("", exc.msg or "syntax error")
        raise MetadataError(
            f"metadata is not well-formed XML: {message}, column {column}",
            line=line + line_offset if line else None,
        ) from None
    except (etree.LxmlError, ValueError) as exc:
        raise MetadataError(f"metadata cannot be parsed: {exc}") from None
    if root is None:
        raise MetadataError("metadata has no root element")
    if root.getroottree().docinfo.internalDTD is not None:  # a DOCTYPE in an exotic encoding
        raise MetadataError("metadata has a DOCTYPE, which is not allowed")
    return _Reader(line_offset).read(root)


def _refuse_doctype(data: bytes, line_offset: int) -> None:
    for pattern, ascii_compatible in _DOCTYPE_PATTERNS:
        at = data.find(pattern)
        if at >= 0:
            line = data[:at].count(b"\n") + 1 + line_offset if ascii_compatible else None
            raise MetadataError("metadata has a DOCTYPE, which is not allowed", line=line)


def _key(name: str) -> str:
    """Fold a name so dataMode, datamode, data-mode and data_mode compare equal."""
    return name.replace("-", "").replace("_", "").lower()


def _split(tag: str) -> tuple[str | None, str]:
    if tag.startswith("{"):
        namespace, _, local = tag[1:].partition("}")
        return namespace, local
    return None, tag


def _children(el: etree._Element) -> list[etree._Element]:
    return [child for child in el if isinstance(child.tag, str)]


def _local(el: etree._Element) -> str:
    return _split(str(el.tag))[1]


def _all_text(el: etree._Element) -> str:
    return "".join(str(t) for t in el.itertext())


def _text(el: etree._Element) -> str | None:
    text = " ".join(_all_text(el).split())
    return text or None


def _id_text(el: etree._Element) -> str | None:
    # Ids are base64 or uuids; SRCs wrap them over lines (RFC 7865's own group-ref does).
    text = "".join(_all_text(el).split())
    return text or None


def _attr(el: etree._Element, *names: str) -> str | None:
    wanted = [_key(n) for n in names]
    found = {_key(_split(str(k))[1]): str(v) for k, v in el.attrib.items()}
    for key in wanted:
        value = found.get(key)
        if value is not None:
            value = "".join(value.split())
            if value:
                return value
    return None


def _fields(el: etree._Element) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []

    def step(node: etree._Element) -> str:
        # <header label="P-Asserted-Identity"><value>...: the label says what the value is.
        local = _split(node.tag)[1]
        qualifier = _attr(node, "label", "name", "type")
        return f"{local}[{qualifier}]" if qualifier else local

    def walk(node: etree._Element, path: str) -> None:
        for name, value in node.attrib.items():
            out.append((f"{path}@{_split(str(name))[1]}", str(value)))
        text = " ".join((node.text or "").split())
        if text:
            out.append((path, text))
        for child in _children(node):
            walk(child, f"{path}/{step(child)}")

    walk(el, step(el))
    return tuple(out)


@dataclass
class _Reader:
    """Reads one document; lives for one call of :func:`parse_metadata`."""

    line_offset: int
    standard: set[str | None] = field(default_factory=lambda: {None, *RECORDING_NAMESPACES})
    warnings: list[str] = field(default_factory=list)
    extensions: list[Extension] = field(default_factory=list)

    def line(self, el: etree._Element) -> int | None:
        line = el.sourceline
        return line + self.line_offset if isinstance(line, int) and line > 0 else None

    def where(self, el: etree._Element) -> str:
        line = self.line(el)
        return f"<{_split(el.tag)[1]}> at line {line}" if line else f"<{_split(el.tag)[1]}>"

    def is_standard(self, el: etree._Element) -> bool:
        return _split(el.tag)[0] in self.standard

    def keep(
        self, el: etree._Element, parent: str | None, kind: ExtensionKind | None = None
    ) -> Extension:
        namespace, local = _split(el.tag)
        if kind is None:
            if _key(local) == "extensiondata" and self.is_standard(el):
                kind = "extensiondata"
            else:
                kind = "unrecognized" if self.is_standard(el) else "vendor"
        xml = etree.tostring(el, encoding="unicode", with_tail=False)
        return Extension(kind, local, namespace, xml, parent, _fields(el))

    # -- the root ----------------------------------------------------------------------------

    def read(self, root: etree._Element) -> Recording:
        namespace, local = _split(root.tag)
        if _key(local) not in ("recording", "recordingmetadata"):
            raise MetadataError(f"root element is <{local}>, not <recording>", line=self.line(root))
        dialect = RECORDING_NAMESPACES.get(namespace or "", "none")
        if namespace is not None and namespace not in RECORDING_NAMESPACES:
            # Tolerate a namespace we have not seen (a typo, a new version): read it as ours.
            self.standard.add(namespace)
            dialect = "unknown"
            self.warnings.append(f"root namespace {namespace!r} is not a recording namespace")
        if namespace is None and _key(local) == "recordingmetadata":
            dialect = "early-draft"
        stray = " ".join((root.text or "").split())
        if stray:
            self.warnings.append(f"text directly inside <{local}> ignored: {stray[:60]!r}")

        datamode: DataMode | None = None
        recording_id: str | None = None
        groups: dict[str, Group] = {}
        sessions: dict[str, Session] = {}
        participants: dict[str, Participant] = {}
        streams: dict[str, Stream] = {}
        sras: dict[str, SessionRecordingAssoc] = {}
        psas: dict[tuple[str, str | None], ParticipantSessionAssoc] = {}
        psts: dict[str, ParticipantStreamAssoc] = {}
        implied_sras: list[SessionRecordingAssoc] = []
        implied_psas: list[ParticipantSessionAssoc] = []
        parented: list[Extension] = []

        for child in _children(root):
            key = _key(_local(child))
            if not self.is_standard(child):
                self.extensions.append(self.keep(child, None))
            elif key == "datamode":
                datamode = self.datamode(child)
            elif key == "recording":  # early draft: <recording id=...><requestor>...
                recording_id = _attr(child, "id", "recording_id") or recording_id
                self.extensions.append(self.keep(child, recording_id))
            elif key == "group":
                group_item = self.group(child)
                if group_item is not None:
                    self.unique(groups, group_item.group_id, group_item, child)
            elif key == "session":
                session_item = self.session(child, implied_sras)
                if session_item is not None:
                    self.unique(sessions, session_item.session_id, session_item, child)
            elif key == "participant":
                participant = self.participant(child, implied_psas)
                if participant is not None:
                    self.unique(participants, participant.participant_id, participant, child)
            elif key == "stream":
                stream = self.stream(child)
                if stream is not None:
                    self.unique(streams, stream.stream_id, stream, child)
            elif key == "sessionrecordingassoc":
                sra = self.sra(child)
                if sra is not None:
                    self.unique(sras, sra.session_id, sra, child)
            elif key == "participantsessionassoc":
                psa = self.psa(child)
                if psa is not None:
                    self.unique(psas, (psa.participant_id, psa.session_id), psa, child)
            elif key == "participantstreamassoc":
                pst = self.pst(child)
                if pst is not None:
                    self.unique(psts, pst.participant_id, pst, child)
            elif key == "extensiondata":
                parented.append(self.keep(child, _attr(child, "parent")))
            else:
                self.extensions.append(self.keep(child, None))

        # Late drafts put the participant-session link (and its times) on <participant> and
        # the session-recording link on <session>; an explicit association element wins.
        for sra in implied_sras:
            sras.setdefault(sra.session_id, sra)
        for psa in implied_psas:
            psas.setdefault((psa.participant_id, psa.session_id), psa)
        # Early drafts hang <extensiondata parent="id"> at top level: attach it to its owner.
        owners: tuple[dict[str, Any], ...] = (participants, sessions, groups, streams)
        for ext in parented:
            table = next((t for t in owners if ext.parent in t), None)
            if table is None or ext.parent is None:  # ids are strings: None owns nothing
                self.extensions.append(ext)
            else:
                owner = table[ext.parent]
                table[ext.parent] = replace(owner, extensions=(*owner.extensions, ext))

        if datamode is None:
            self.warnings.append("no <datamode>; assuming complete")
            datamode = "complete"
        return Recording(
            datamode=datamode,
            dialect=dialect,
            namespace=namespace,
            recording_id=recording_id,
            groups=tuple(groups.values()),
            sessions=tuple(sessions.values()),
            participants=tuple(participants.values()),
            streams=tuple(streams.values()),
            session_recording_assocs=tuple(sras.values()),
            participant_session_assocs=tuple(psas.values()),
            participant_stream_assocs=tuple(psts.values()),
            extensions=tuple(self.extensions),
            warnings=tuple(self.warnings),
        )

    def unique(
        self, table: dict[Any, Any], key: Hashable, item: object, el: etree._Element
    ) -> bool:
        if key in table:
            # Keep the first; the duplicate is kept verbatim rather than silently merged.
            self.warnings.append(f"duplicate {self.where(el)} kept as extension")
            self.extensions.append(self.keep(el, None, "unrecognized"))
            return False
        table[key] = item
        return True

    def missing_id(self, el: etree._Element, what: str) -> None:
        self.warnings.append(f"{self.where(el)} has no {what}; kept as extension")
        self.extensions.append(self.keep(el, None, "unrecognized"))

    def datamode(self, el: etree._Element) -> DataMode:
        value = (_text(el) or "").lower()
        if value == "complete":
            return "complete"
        if value == "partial":
            return "partial"
        raise MetadataError(
            f"datamode {(_text(el) or '')[:40]!r} is neither complete nor partial",
            line=self.line(el),
        )

    # -- elements ------------------------------------------------------------------------------

    def group(self, el: etree._Element) -> Group | None:
        group_id = _attr(el, "group_id", "id")
        if group_id is None:
            self.missing_id(el, "group_id")
            return None
        times: dict[str, str | None] = {"associatetime": None, "disassociatetime": None}
        extensions: list[Extension] = []
        for child in _children(el):
            key = _key(_local(child))
            if self.is_standard(child) and key in times:
                times[key] = _text(child)
            else:
                extensions.append(self.keep(child, group_id))
        return Group(group_id, times["associatetime"], times["disassociatetime"], tuple(extensions))

    def session(self, el: etree._Element, implied: list[SessionRecordingAssoc]) -> Session | None:
        session_id = _attr(el, "session_id", "id")
        if session_id is None:
            self.missing_id(el, "session_id")
            return None
        sip_ids: list[str] = []
        group_ref = _attr(el, "group", "group_ref", "group_id")
        start = stop = assoc = disassoc = None
        extensions: list[Extension] = []
        for child in _children(el):
            key = _key(_local(child))
            if not self.is_standard(child):
                extensions.append(self.keep(child, session_id))
            elif key == "sipsessionid":
                value = _text(child)
                if value:
                    sip_ids.append(re.sub(r"\s*;\s*", ";", value))
            elif key == "groupref":
                group_ref = _id_text(child)
            elif key == "starttime":
                start = _text(child)
            elif key == "stoptime":
                stop = _text(child)
            elif key == "associatetime":
                assoc = _text(child)
            elif key == "disassociatetime":
                disassoc = _text(child)
            else:
                extensions.append(self.keep(child, session_id))
        if assoc is not None or disassoc is not None:
            implied.append(SessionRecordingAssoc(session_id, assoc, disassoc))
        return Session(session_id, tuple(sip_ids), group_ref, start, stop, tuple(extensions))

    def participant(
        self, el: etree._Element, implied: list[ParticipantSessionAssoc]
    ) -> Participant | None:
        participant_id = _attr(el, "participant_id", "id")
        if participant_id is None:
            self.missing_id(el, "participant_id")
            return None
        name_ids: list[NameID] = []
        bare_aors: list[str] = []
        bare_names: list[Name] = []
        send: list[str] | None = None
        recv: list[str] | None = None
        assoc = disassoc = None
        extensions: list[Extension] = []
        for child in _children(el):
            key = _key(_local(child))
            if not self.is_standard(child):
                extensions.append(self.keep(child, participant_id))
            elif key == "nameid":
                name_ids.append(self.name_id(child, participant_id, extensions))
            elif key == "aor":  # drafts: <aor> and <name> directly in <participant>
                if value := _text(child):
                    bare_aors.append(value)
            elif key == "name":
                bare_names.append(self.name(child))
            elif key == "send":
                send = (send or []) + self.stream_refs(child)
            elif key == "recv":
                recv = (recv or []) + self.stream_refs(child)
            elif key in ("associatetime", "starttime"):
                assoc = _text(child)
            elif key in ("disassociatetime", "stoptime"):
                disassoc = _text(child)
            else:
                extensions.append(self.keep(child, participant_id))
        if bare_aors or bare_names:
            first = NameID(bare_aors[0] if bare_aors else None, tuple(bare_names))
            name_ids.extend([first, *(NameID(a) for a in bare_aors[1:])])
        if send is not None or recv is not None:
            # Like a <participantstreamassoc>, the lists given are the whole truth: a partial
            # update that lists only <recv> says the participant stopped sending (hold).
            send, recv = send or [], recv or []
        session_ref = _attr(el, "session", "session_id")
        if session_ref is not None or assoc is not None or disassoc is not None:
            implied.append(ParticipantSessionAssoc(participant_id, session_ref, assoc, disassoc))
        return Participant(
            participant_id,
            tuple(name_ids),
            None if send is None else tuple(send),
            None if recv is None else tuple(recv),
            tuple(extensions),
        )

    def name_id(
        self, el: etree._Element, participant_id: str, extensions: list[Extension]
    ) -> NameID:
        aor = (el.get("aor") or "").strip() or None
        names: list[Name] = []
        for child in _children(el):
            key = _key(_local(child))
            if self.is_standard(child) and key == "name":
                names.append(self.name(child))
            elif self.is_standard(child) and key == "aor" and aor is None:
                aor = _text(child)
            else:
                extensions.append(self.keep(child, participant_id))
        return NameID(aor, tuple(names))

    def name(self, el: etree._Element) -> Name:
        # Keep a blank name as "" (Ribbon sends " "): it says the SRC knew of no name.
        return Name(" ".join(_all_text(el).split()), el.get(_XML_LANG))

    def stream_refs(self, el: etree._Element) -> list[str]:
        children = _children(el)
        if children:  # early draft: <send><id>...</id></send>
            return [ref for c in children if (ref := _id_text(c))]
        ref = _id_text(el)
        return [ref] if ref else []

    def stream(self, el: etree._Element) -> Stream | None:
        stream_id = _attr(el, "stream_id", "id")
        if stream_id is None:
            self.missing_id(el, "stream_id")
            return None
        values: dict[str, str | None] = {}
        extensions: list[Extension] = []
        slots = {
            "label": "label",
            "contenttype": "content_type",
            "mediatype": "content_type",
            "content": "content_type",
            "type": "content_type",
            "mode": "mode",
            "associatetime": "associate_time",
            "starttime": "associate_time",
            "disassociatetime": "disassociate_time",
            "stoptime": "disassociate_time",
        }
        for child in _children(el):
            slot = slots.get(_key(_local(child)))
            if self.is_standard(child) and slot is not None:
                values[slot] = _text(child)
            else:
                extensions.append(self.keep(child, stream_id))
        return Stream(
            stream_id,
            _attr(el, "session_id", "session"),
            extensions=tuple(extensions),
            **values,
        )

    def assoc_times(self, el: etree._Element, owner: str) -> tuple[str | None, str | None]:
        assoc = disassoc = None
        for child in _children(el):
            key = _key(_local(child))
            if self.is_standard(child) and key in ("associatetime", "starttime"):
                assoc = _text(child)
            elif self.is_standard(child) and key in ("disassociatetime", "stoptime"):
                disassoc = _text(child)
            else:
                self.extensions.append(self.keep(child, owner))
        return assoc, disassoc

    def sra(self, el: etree._Element) -> SessionRecordingAssoc | None:
        session_id = _attr(el, "session_id", "session", "id")
        if session_id is None:
            self.missing_id(el, "session_id")
            return None
        return SessionRecordingAssoc(session_id, *self.assoc_times(el, session_id))

    def psa(self, el: etree._Element) -> ParticipantSessionAssoc | None:
        participant_id = _attr(el, "participant_id", "participant")
        if participant_id is None:
            self.missing_id(el, "participant_id")
            return None
        session_id = _attr(el, "session_id", "session")
        return ParticipantSessionAssoc(
            participant_id, session_id, *self.assoc_times(el, participant_id)
        )

    def pst(self, el: etree._Element) -> ParticipantStreamAssoc | None:
        participant_id = _attr(el, "participant_id", "participant", "id")
        if participant_id is None:
            self.missing_id(el, "participant_id")
            return None
        send: list[str] = []
        recv: list[str] = []
        for child in _children(el):
            key = _key(_local(child))
            if self.is_standard(child) and key == "send":
                send.extend(self.stream_refs(child))
            elif self.is_standard(child) and key == "recv":
                recv.extend(self.stream_refs(child))
            else:
                self.extensions.append(self.keep(child, participant_id))
        return ParticipantStreamAssoc(participant_id, tuple(send), tuple(recv))
