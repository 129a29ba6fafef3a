"""``/api`` of the parent of ``[service] workers = N``: the API of :mod:`siprecd.web.api` over
every worker.

* ``/api/sessions``: the union of the workers' live sessions (newest first), each with a
  ``"worker"`` field, and ``"problems"``: one line per worker that did not answer.
* ``/api/server``: the first answering worker's document with the counts summed over the
  workers, the parent's uptime, and ``"workers"``: each worker's own figures or problem.
* everything else (the endpoint index, one live session, the recordings catalog, one recording,
  its audio): asked of each running worker in index order, and the first answer that is not a
  404 is relayed as it is, the audio streamed.  The workers share the recording directory, so
  for ``/api/recordings...`` the first worker that answers is relayed, 404 included.  When
  every worker that answered said 404 but another could not be asked, the answer is 503 naming
  it (the live session may be on it).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.web.server import Request

from siprecd.web.api import ApiResource
from siprecd.web.upstream import (
    FORWARDED_REQUEST_HEADERS,
    Answer,
    FanOut,
    Unavailable,
    Upstream,
    relay,
    render_later,
)
from siprecd.workers.directory import WorkerDirectory, WorkerInfo

_json = ApiResource._json  # the API's own JSON answer (status, type, length, HEAD)
SUMMED = ("active_sessions", "finished_sessions")


class ClusterApi(FanOut):
    def __init__(self, directory: WorkerDirectory, upstream: Upstream, clock: IReactorTime) -> None:
        super().__init__(directory, upstream)
        self._clock = clock
        self._started = clock.seconds()

    def render(self, request: Request) -> bytes | int:
        request.setHeader(b"cache-control", b"no-store")
        if request.method not in (b"GET", b"HEAD"):
            method = request.method.decode("ascii", "replace")
            request.setHeader(b"allow", b"GET, HEAD")
            return _json(request, {"error": f"{method} is not allowed: the API is read-only (GET, HEAD)"}, 405)
        return render_later(request, lambda: self.answer(request))

    async def answer(self, request: Request) -> bytes | None:
        path = request.postpath[:-1] if request.postpath and request.postpath[-1] == b"" else request.postpath
        if path == [b"sessions"]:
            return await self._sessions(request)
        if path == [b"server"]:
            return await self._server(request)
        return await self._first_found(request, path)

    async def _ask(self, request: Request, path: bytes, *fields: str) -> list[tuple[WorkerInfo, dict[str, Any] | str]]:
        """Each worker's JSON object with ``fields``, or the problem with it."""
        return [(w, _document(w, path, a, fields)) for w, a in await self.ask_workers(request, path)]

    async def _sessions(self, request: Request) -> bytes:
        sessions: list[dict[str, Any]] = []
        problems: list[str] = []
        answers = await self._ask(request, b"/api/sessions", "sessions")
        for worker, document in answers:
            if isinstance(document, str) or not isinstance(document["sessions"], list):
                problems.append(document if isinstance(document, str) else f"worker {worker.index}: no session list")
                continue
            sessions.extend({**s, "worker": worker.index} for s in document["sessions"] if isinstance(s, dict))
        if problems and len(problems) == len(answers):
            return _json(request, {"error": "no worker answered: " + "; ".join(problems)}, 503)
        sessions.sort(key=lambda s: str(s.get("started_at") or ""), reverse=True)
        return _json(request, {"sessions": sessions, "problems": problems})

    async def _server(self, request: Request) -> bytes:
        base: dict[str, Any] | None = None
        totals = dict.fromkeys(SUMMED, 0)
        workers = []
        for worker, document in await self._ask(request, b"/api/server", *SUMMED):
            own: dict[str, Any] = {"worker": worker.index, "pid": worker.pid, "alive": worker.alive,
                                   "restarts": worker.restarts}
            if isinstance(document, str):
                own["problem"] = document
            else:
                base = base or document
                for name in SUMMED:
                    totals[name] += document[name] if isinstance(document[name], int) else 0
                own.update({name: document.get(name) for name in (*SUMMED, "uptime_seconds")}, problem=None)
            workers.append(own)
        if base is None:
            problems = "; ".join(w["problem"] for w in workers) or "no workers are configured"
            return _json(request, {"error": f"no worker answered: {problems}"}, 503)
        uptime = round(self._clock.seconds() - self._started, 3)
        return _json(request, {**base, **totals, "uptime_seconds": uptime, "workers": workers})

    async def _first_found(self, request: Request, path: list[bytes]) -> bytes | None:
        """None once a worker's answer is relayed; else the parent's own answer."""
        target = b"/api/" + b"/".join(path)
        query = request.uri.partition(b"?")[2]
        if query:
            target += b"?" + query
        headers = self.upstream.headers_for(request, FORWARDED_REQUEST_HEADERS)
        # Every worker reads the same recording directory: the first to answer knows.
        shared = path[:1] == [b"recordings"]
        problems: list[str] = []
        not_found: bytes | None = None  # the last 404's body
        for worker in self.directory.workers():
            try:
                response = await self.upstream.open(worker, target, headers, request.method)
            except Unavailable as problem:
                problems.append(str(problem))
                continue
            if response.code == 404 and not shared:
                not_found = await self.upstream.discard(response)
                continue
            await relay(request, response, self._clock, self.upstream.timeout)
            return None
        if not_found is not None and not problems:
            return _json(request, _error_of(not_found), 404)
        what = _error_of(not_found)["error"] + " on the workers that answered; " if not_found is not None else ""
        reasons = "; ".join(problems) or "no workers are configured"
        return _json(request, {"error": f"{what}no answer from: {reasons}"}, 503)


def _document(worker: WorkerInfo, path: bytes, answer: Answer | Unavailable, fields: tuple[str, ...]) -> dict[str, Any] | str:
    if isinstance(answer, Unavailable):
        return str(answer)
    if answer.status != 200:
        return f"worker {worker.index}: {path.decode()} answered HTTP {answer.status}"
    try:
        document = json.loads(answer.body)
    except ValueError:
        return f"worker {worker.index}: the answer is not JSON"
    if not isinstance(document, dict) or any(f not in document for f in fields):
        return f"worker {worker.index}: the answer lacks {', '.join(fields)}"
    return document


def _error_of(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
        if isinstance(document, dict) and isinstance(document.get("error"), str):
            return {"error": document["error"]}
    except ValueError:
        pass
    return {"error": "not found"}
