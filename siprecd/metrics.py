"""Prometheus metrics: one :class:`Metrics` per server, with its own registry (no globals).

``service.py`` creates the instance and passes it to the SIP stack, the controller and the key
rotation; ``/metrics`` (:mod:`siprecd.web.metrics`) renders :meth:`Metrics.exposition`.

Two kinds of count are exported:

* SIP events (requests received, responses sent, sessions finished) are counted here, in plain
  dicts, by the code where they happen (a few per call).
* What the components already count in plain attributes (RTP per stream, bytes written per
  file, error and drop counters, key rotations) is read at scrape time.  Per-stream counters
  live as long as their session; when a session ends the controller hands its streams and files
  to :meth:`Metrics.session_finished`, which folds their counts into running totals in the same
  reactor turn, so every counter stays monotonic: finished streams + live streams.

One custom collector exports both at scrape time (no prometheus_client Counter objects: no lock
per event, no ``_created`` series), so the media path pays nothing for metrics.

The metric families, their units and their exact meaning are in :data:`HELP` below (that text
is also what Prometheus shows).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from siprecd.recording.files import disk_free

if TYPE_CHECKING:
    from siprecd.crypto.rotation import KeyRotation
    from siprecd.sip.stack import SIPStack
    from siprecd.siprec.controller import Controller

# Request methods get their own label value; anything else a peer sends is "other", so a
# scanner spraying made-up methods cannot create unbounded series.
METHODS = frozenset(
    {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE", "INFO", "REGISTER", "SUBSCRIBE",
     "NOTIFY", "REFER", "MESSAGE", "PUBLISH", "PRACK"}
)
TRANSPORTS = frozenset({"UDP", "TCP", "TLS"})
CODECS = {"pcmu": "PCMU", "pcma": "PCMA", "g722": "G722", "opus": "opus"}

# Session outcomes, from the end reason the SIP core or the controller gives (in this order).
OUTCOMES = (
    ("BYE from the SRC", "bye"),  # the SRC ended the call
    ("cancelled", "cancelled"),  # CANCEL before the INVITE was answered
    ("rejected", "rejected"),  # the INVITE got an error response
    ("no ACK", "no_ack"),  # the 2xx was never ACKed: the SRS sent BYE
    ("recording failed", "recording_failed"),  # disk full or I/O error: the SRS sent BYE
    ("SRS shutting down", "shutdown"),  # service stop: the SRS sent BYE
    ("interrupted", "interrupted"),  # open when the server died; closed by start-up recovery
    ("orphaned", "orphaned"),  # no media and no SIP for [state] orphan_timeout: the SRS sent BYE
)

# The ``kind`` values of siprecd_errors_total and the component counters each one sums.
ERROR_KINDS = ("storage", "recording", "metadata", "internal")

HELP = {
    "sessions_active": "Recording sessions in progress.",
    "sessions_finished": (
        "Recording sessions that ended, by outcome: bye (BYE from the SRC), no_ack (2xx never "
        "ACKed), recording_failed (disk full or I/O error), shutdown (service stop), cancelled, "
        "interrupted (left open by a crash, closed by start-up recovery), orphaned (no media and "
        "no SIP for [state] orphan_timeout), other."
    ),
    "sip_requests": (
        "SIP requests received and parsed (ACKs and retransmissions included), by method "
        "(unknown methods are 'other') and transport."
    ),
    "sip_responses": (
        "SIP responses sent, by request method and status code: first transmissions only "
        "(timer retransmissions are not counted), stateless 400s to malformed requests included."
    ),
    "sip_dropped": (
        "SIP messages not processed, by reason: not_sip (not SIP at all: dropped silently), "
        "malformed (unparseable or invalid: requests get a stateless 400, responses are dropped), "
        "rate_limited (new out-of-dialog requests over [sip] rate_limit: answered 503)."
    ),
    "rtp_packets": (
        "RTP packets received on recorded streams from the latched source and handed to the "
        "stream's timeline (DTMF and comfort noise included), by the stream's negotiated codec."
    ),
    "rtp_payload_bytes": "RTP payload octets of those packets (RTP header and padding excluded), by codec.",
    "rtp_lost": (
        "RTP sequence numbers given up on: not received within [media] reorder_window / "
        "max_reorder_delay (the time is recorded as silence), by codec."
    ),
    "rtp_late": (
        "RTP packets that arrived after their sequence number had been given up as lost (or after "
        "the stream ended) and were discarded, by codec. Duplicates are not late."
    ),
    "rtp_duplicates": "RTP packets discarded as duplicates of packets already received, by codec.",
    "recording_bytes": (
        "Bytes appended to audio recording files (stream and mix files, file headers and the "
        "encryption container's overhead included; metadata, SDP and session.json excluded)."
    ),
    "srtp_sessions": (
        "SRTP contexts set up for recorded streams, by key exchange method (sdes, dtls-srtp) and "
        "suite: one per stream when it is first secured and one per rekey (a re-offer with a new "
        "key); a re-offer with the same key keeps its context and is not counted."
    ),
    "srtp_restored": (
        "SRTP agreements carried on from the state store, by method, suite, how (restart, "
        "replaces) and outcome: carried (keys, ROC and SRTCP index continued)."
    ),
    "srtp_auth_failures": (
        "Packets dropped on secured streams because they did not authenticate (forged, replayed, "
        "under an unknown key or MKI, or sent unprotected), by kind: rtp (SRTP) or rtcp (SRTCP)."
    ),
    "disk_free": "Bytes available to the server on the filesystem of [recording] directory.",
    "durable_queued": (
        "Session file writes (session.json, metadata, SDP, recordings to publish) queued for the "
        "durable writer thread; minus siprecd_durable_writes_done_total: the backlog, which the "
        "200s wait for (one that keeps growing: the disk is slower than the calls)."
    ),
    "durable_done": "Session file writes the durable writer thread finished (durable or failed).",
    "durable_failed": (
        "Session file writes the durable writer thread could not make durable (ENOSPC, EIO): a "
        "recording left as .part for start-up recovery, or a session file not written (logged)."
    ),
    "key_rotations": "Key-encryption keys created by the scheduled key rotation.",
    "state_degraded": (
        "1 while the shared state store (Redis) is unreachable and session state is kept only on "
        "this node's disk; 0 when it is written to Redis too. Only with [state] backend = redis."
    ),
    "state_resyncs": "Times the connection to Redis came (back) and every live session was written to it again.",

    "key_rotation_failures": (
        "Scheduled key rotations that failed (new files keep using the current key; tried again "
        "at the next interval or sooner)."
    ),
    "dtls_handshakes": (
        "DTLS-SRTP handshakes on recorded streams, by outcome (completed: keys installed; failed: "
        "timed out, refused certificate fingerprint, no common SRTP profile), the SRS's role "
        "(active: DTLS client, passive: server), the SRTP profile negotiated (empty if failed) and "
        "the component: rtp, or rtcp for the second association a peer runs on the RTCP port "
        "when RTCP is not multiplexed."
    ),
    "errors": (
        "Errors by kind: storage (a session directory, session.json, SDP or metadata file could "
        "not be written), recording (an audio file write failed and its session was ended), "
        "metadata (metadata or a BYE body that could not be parsed: stored raw), internal "
        "(unexpected exceptions caught in the SIP stack, the UAS core or a session's media tick)."
    ),
}

_RTP_FIELDS = ("packets", "bytes", "lost", "too_late", "duplicates")
# kind label of siprecd_srtp_auth_failures_total -> the receiver's counter
_SRTP_FAILURES = (("rtp", "srtp_auth_failures"), ("rtcp", "srtcp_auth_failures"))


def srtp_failures(streams: Iterable[Any]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for stream in streams:
        media = stream.media
        if media is not None:
            for kind, name in _SRTP_FAILURES:
                counts[kind] += getattr(media.counters, name)
    return counts


def outcome_of(reason: str) -> str:
    """The ``outcome`` label of a session that ended for ``reason``."""
    for prefix, outcome in OUTCOMES:
        if reason.startswith(prefix):
            return outcome
    return "other"


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


def codec_label(codec: str | None) -> str:
    if not codec:
        return "unknown"
    return CODECS.get(codec.lower(), codec.upper())


def writer_bytes(writer: Any) -> int:
    return int(getattr(writer, "bytes_written", 0))


class Metrics:
    """All of siprecd's metrics and the registry they are exported from."""

    def __init__(self, *, process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        if process:
            # process_* (CPU, resident memory, open fds): Linux /proc, nothing elsewhere.
            from prometheus_client import ProcessCollector

            ProcessCollector(registry=self.registry)
        self.stack: SIPStack | None = None
        self.controller: Controller | None = None
        self.rotation: KeyRotation | None = None
        self.state: Any = None
        self.sip_requests: Counter[tuple[str, str]] = Counter()  # (method, transport)
        self.sip_responses: Counter[tuple[str, str]] = Counter()  # (method, code)
        self.sessions_finished: Counter[str] = Counter()  # outcome
        # Totals of streams and files whose session has ended: codec -> _RTP_FIELDS counts.
        self._finished_rtp: dict[str, list[int]] = {}
        self._finished_bytes_written = 0
        self._finished_srtp_failures: Counter[str] = Counter()  # kind
        self.registry.register(_ComponentCollector(self))

    # --- wiring (each component calls this from its constructor) -----------------------------

    def watch_stack(self, stack: SIPStack) -> None:
        self.stack = stack

    def watch_controller(self, controller: Controller) -> None:
        self.controller = controller

    def watch_rotation(self, rotation: KeyRotation) -> None:
        self.rotation = rotation

    def watch_state(self, store: Any) -> None:
        self.state = store

    # --- events ------------------------------------------------------------------------------

    def sip_request(self, method: str, transport: str) -> None:
        self.sip_requests[method_label(method), transport if transport in TRANSPORTS else "other"] += 1

    def sip_response(self, method: str, status: int) -> None:
        self.sip_responses[method_label(method), str(status)] += 1

    def session_finished(self, reason: str, streams: Iterable[Any] = (), writers: Iterable[Any] = ()) -> None:
        """A session ended: count its outcome and keep its streams' and files' final counts.

        ``streams`` are its RecordedStreams (current and dropped by re-offers), ``writers``
        its other audio files (the mix).  Call it once, after the files are finalized and in
        the same reactor turn as the session leaves the controller's live set."""
        self.sessions_finished[outcome_of(reason)] += 1
        streams = list(streams)
        self._finished_srtp_failures.update(srtp_failures(streams))
        for stream in streams:
            recorder = stream.recorder
            if recorder is None:
                continue
            totals = self._finished_rtp.setdefault(codec_label(recorder.codec), [0] * len(_RTP_FIELDS))
            counters = recorder.counters
            for i, name in enumerate(_RTP_FIELDS):
                totals[i] += getattr(counters, name)
            self._finished_bytes_written += writer_bytes(recorder.writer)
        for writer in writers:
            self._finished_bytes_written += writer_bytes(writer)

    # --- scrape ------------------------------------------------------------------------------

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The registry in the format ``accept`` asks for (Prometheus text by default)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def _live(self) -> Iterator[tuple[list[Any], list[Any]]]:
        controller = self.controller
        if controller is not None:
            yield from controller.live_media()

    def rtp_totals(self) -> dict[str, list[int]]:
        totals = {codec: list(values) for codec, values in self._finished_rtp.items()}
        for streams, _ in self._live():
            for stream in streams:
                recorder = stream.recorder
                if recorder is None:
                    continue
                values = totals.setdefault(codec_label(recorder.codec), [0] * len(_RTP_FIELDS))
                counters = recorder.counters
                for i, name in enumerate(_RTP_FIELDS):
                    values[i] += getattr(counters, name)
        return totals

    def srtp_auth_failures(self) -> Counter[str]:
        totals = Counter(dict.fromkeys((kind for kind, _ in _SRTP_FAILURES), 0))
        totals.update(self._finished_srtp_failures)
        for streams, _ in self._live():
            totals.update(srtp_failures(streams))
        return totals

    def bytes_written(self) -> int:
        total = self._finished_bytes_written
        for streams, writers in self._live():
            for stream in streams:
                if stream.recorder is not None:
                    total += writer_bytes(stream.recorder.writer)
            for writer in writers:
                total += writer_bytes(writer)
        return total

    def errors(self) -> dict[str, int]:
        counts = dict.fromkeys(ERROR_KINDS, 0)
        controller = self.controller
        if controller is not None:
            c = controller.counters
            counts["storage"] += c.get("storage_errors", 0)
            counts["recording"] += c.get("recording_failures", 0)
            counts["metadata"] += c.get("metadata_errors", 0) + c.get("bad_bodies", 0)
            counts["internal"] += c.get("internal_errors", 0)
        stack = self.stack
        if stack is not None:
            counts["internal"] += stack.counters.get("internal_errors", 0)
            counts["internal"] += stack.core.counters.get("internal_errors", 0)
        return counts


class _ComponentCollector(Collector):
    """Reads the components' own counters at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterable[Metric]:
        # Names only (registry collision checks); samples come from collect().
        yield GaugeMetricFamily("siprecd_sessions_active", HELP["sessions_active"])
        yield CounterMetricFamily("siprecd_sessions_finished", HELP["sessions_finished"])
        yield CounterMetricFamily("siprecd_sip_requests", HELP["sip_requests"])
        yield CounterMetricFamily("siprecd_sip_responses", HELP["sip_responses"])
        yield CounterMetricFamily("siprecd_sip_messages_dropped", HELP["sip_dropped"])
        for name, key in _RTP_FAMILIES:
            yield CounterMetricFamily(name, HELP[key])
        yield CounterMetricFamily("siprecd_recording_bytes_written", HELP["recording_bytes"])
        yield CounterMetricFamily("siprecd_srtp_sessions", HELP["srtp_sessions"])
        yield CounterMetricFamily("siprecd_srtp_auth_failures", HELP["srtp_auth_failures"])
        yield GaugeMetricFamily("siprecd_disk_free_bytes", HELP["disk_free"])
        yield CounterMetricFamily("siprecd_durable_writes_queued", HELP["durable_queued"])
        yield CounterMetricFamily("siprecd_durable_writes_done", HELP["durable_done"])
        yield CounterMetricFamily("siprecd_durable_writes_failed", HELP["durable_failed"])
        yield CounterMetricFamily("siprecd_errors", HELP["errors"])
        yield CounterMetricFamily("siprecd_dtls_handshakes", HELP["dtls_handshakes"])
        yield CounterMetricFamily("siprecd_key_rotations", HELP["key_rotations"])
        yield CounterMetricFamily("siprecd_key_rotation_failures", HELP["key_rotation_failures"])
        yield GaugeMetricFamily("siprecd_state_store_degraded", HELP["state_degraded"])
        yield CounterMetricFamily("siprecd_state_store_resyncs", HELP["state_resyncs"])

    def collect(self) -> Iterable[Metric]:
        m = self.metrics
        controller, stack, rotation = m.controller, m.stack, m.rotation
        yield _labelled("siprecd_sessions_finished", "sessions_finished", ("outcome",), m.sessions_finished)
        yield _labelled("siprecd_sip_requests", "sip_requests", ("method", "transport"), m.sip_requests)
        yield _labelled("siprecd_sip_responses", "sip_responses", ("method", "code"), m.sip_responses)
        if controller is not None:
            yield GaugeMetricFamily("siprecd_sessions_active", HELP["sessions_active"], value=len(controller.sessions))
        if stack is not None:
            dropped = CounterMetricFamily("siprecd_sip_messages_dropped", HELP["sip_dropped"], labels=("reason",))
            dropped.add_metric(("not_sip",), stack.counters.get("not_sip_dropped", 0))
            dropped.add_metric(("malformed",), stack.counters.get("malformed", 0))
            dropped.add_metric(("rate_limited",), stack.core.counters.get("rate_limited", 0))
            yield dropped
        if controller is not None:
            totals = m.rtp_totals()
            for i, (name, key) in enumerate(_RTP_FAMILIES):
                family = CounterMetricFamily(name, HELP[key], labels=("codec",))
                for codec in sorted(totals):
                    family.add_metric((codec,), totals[codec][i])
                yield family
            yield CounterMetricFamily(
                "siprecd_recording_bytes_written", HELP["recording_bytes"], value=m.bytes_written()
            )
            yield _labelled(
                "siprecd_srtp_sessions", "srtp_sessions", ("method", "suite"), controller.security.sessions
            )
            if controller.security.restored:
                yield _labelled(
                    "siprecd_srtp_restored", "srtp_restored", ("method", "suite", "how", "outcome"),
                    controller.security.restored,
                )
            yield _labelled("siprecd_srtp_auth_failures", "srtp_auth_failures", ("kind",), m.srtp_auth_failures())
            free = disk_free(controller.config.recording.directory)
            if free is not None:
                yield GaugeMetricFamily("siprecd_disk_free_bytes", HELP["disk_free"], value=free)
            yield CounterMetricFamily(
                "siprecd_durable_writes_queued", HELP["durable_queued"], value=controller.durable.queued
            )
            yield CounterMetricFamily("siprecd_durable_writes_done", HELP["durable_done"], value=controller.durable.done)
            yield CounterMetricFamily(
                "siprecd_durable_writes_failed", HELP["durable_failed"], value=controller.durable.failed
            )
        dtls = controller.security.methods.get("dtls-srtp") if controller is not None else None
        if dtls is not None and dtls.handshakes:
            # From the first handshake on: a family that has not moved yet says nothing.
            yield _labelled(
                "siprecd_dtls_handshakes", "dtls_handshakes", ("outcome", "role", "profile", "component"), dtls.handshakes
            )
        if controller is not None or stack is not None:
            errors = CounterMetricFamily("siprecd_errors", HELP["errors"], labels=("kind",))
            for kind, count in m.errors().items():
                errors.add_metric((kind,), count)
            yield errors
        if m.state is not None:
            yield GaugeMetricFamily("siprecd_state_store_degraded", HELP["state_degraded"], value=int(m.state.degraded))
            yield CounterMetricFamily("siprecd_state_store_resyncs", HELP["state_resyncs"], value=m.state.counters["resyncs"])
        if rotation is not None:
            # Only when rotation runs ([encryption] on, rotation_interval > 0): otherwise these
            # could never move.
            yield CounterMetricFamily("siprecd_key_rotations", HELP["key_rotations"], value=rotation.counters["rotations"])
            yield CounterMetricFamily(
                "siprecd_key_rotation_failures",
                HELP["key_rotation_failures"],
                value=rotation.counters["rotation_failures"],
            )


def _labelled(name: str, key: str, labels: tuple[str, ...], counts: Counter[Any]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, HELP[key], labels=labels)
    for values in sorted(counts):
        family.add_metric(values if isinstance(values, tuple) else (values,), counts[values])
    return family


_RTP_FAMILIES = (
    ("siprecd_rtp_packets", "rtp_packets"),
    ("siprecd_rtp_payload_bytes", "rtp_payload_bytes"),
    ("siprecd_rtp_lost_packets", "rtp_lost"),
    ("siprecd_rtp_late_packets", "rtp_late"),
    ("siprecd_rtp_duplicate_packets", "rtp_duplicates"),
)

