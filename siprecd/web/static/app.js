// siprecd dashboard: live calls, recent recordings and server figures from the JSON API.
//
// No dependencies and no build step.  Everything shown comes from /api/... on this origin; every
// value from the server is put in the page as text (never as HTML): participant names come from
// SIPREC metadata, which an SRC (or a caller's display name) controls.
//
// Authentication: a token given once as ?token=... (removed from the address at once) or typed
// into the sign-in dialog is kept in sessionStorage and sent as "Authorization: Bearer ...".
// Without a token, requests go out as they are, so HTTP basic credentials the browser already
// holds for this origin are used.  <audio src> cannot carry a header, so with a token each
// recording is fetched with it and played from a blob: URL.

const TOKEN_KEY = "siprecd.apiToken";
const LIVE_INTERVAL_MS = 1000;
const HIDDEN_INTERVAL_MS = 5000;
const REQUEST_TIMEOUT_MS = 8000;
const PAGE_SIZE = 20;
const SEARCH_DELAY_MS = 400;

const $ = (id) => document.getElementById(id);
const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

class AuthError extends Error {}

// ---------------------------------------------------------------- formatting (pure)

export function formatDuration(seconds) {
  const total = Math.max(0, Math.floor(Number(seconds) || 0));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

export function formatUptime(seconds) {
  const total = Math.max(0, Math.floor(Number(seconds) || 0));
  const days = Math.floor(total / 86400);
  const rest = formatDuration(total % 86400);
  return days ? `${days} d ${rest.padStart(8, "0")}` : rest;
}

export function formatBytes(bytes) {
  if (bytes === null || bytes === undefined || !Number.isFinite(Number(bytes))) return "unknown";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = Number(bytes);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit ? `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}` : `${value} B`;
}

export function formatLoss(stream) {
  const lost = Number(stream.lost) || 0;
  const expected = (Number(stream.packets) || 0) + Math.max(lost, 0);
  if (!expected) return "–";
  return `${lost} (${((100 * Math.max(lost, 0)) / expected).toFixed(1)}%)`;
}

export function lossRatio(stream) {
  const lost = Math.max(Number(stream.lost) || 0, 0);
  const expected = (Number(stream.packets) || 0) + lost;
  return expected ? lost / expected : 0;
}

export function formatJitter(ms) {
  return ms === null || ms === undefined || !Number.isFinite(Number(ms)) ? "–" : `${Number(ms).toFixed(1)} ms`;
}

// The contract says srtp is null for plain RTP; anything else names the method (and maybe more).
export function formatSrtp(srtp) {
  if (srtp === null || srtp === undefined || srtp === false || srtp === "") return "none";
  if (typeof srtp === "string") return srtp;
  if (Array.isArray(srtp)) return srtp.map(formatSrtp).join(", ");
  if (typeof srtp === "object") {
    const method = srtp.method ?? srtp.keying ?? srtp.key_management ?? srtp.type;
    const suite = srtp.suite ?? srtp.crypto_suite ?? srtp.profile;
    return [method, suite].filter(Boolean).join(" · ") || "yes";
  }
  return String(srtp);
}

export function participantLabel(participant) {
  const name = participant.name || "";
  const aor = participant.aor || "";
  const numbers = (participant.numbers || []).join(", ");
  return name || aor || numbers || participant.id || "unknown";
}

function formatDate(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : dateTime.format(date);
}

function secondsBetween(startIso, endIso) {
  const start = Date.parse(startIso);
  const end = Date.parse(endIso);
  return Number.isFinite(start) && Number.isFinite(end) ? Math.max(0, (end - start) / 1000) : null;
}

// ---------------------------------------------------------------- DOM helpers

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "className") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-") || key.startsWith("aria-") || key === "role" || key === "scope") node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function setClass(node, name, on) {
  if (node.classList.contains(name) !== on) node.classList.toggle(name, on);
}

// ---------------------------------------------------------------- API access

function token() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

function authHeaders() {
  const value = token();
  return value ? { Authorization: `Bearer ${value}` } : {};
}

async function request(path, accept) {
  let response;
  try {
    response = await fetch(path, {
      headers: { Accept: accept, ...authHeaders() },
      cache: "no-store",
      credentials: "same-origin",
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
  } catch (error) {
    throw new Error(error.name === "TimeoutError" ? "timed out" : "network error");
  }
  if (response.status === 401 || response.status === 403) throw new AuthError(`HTTP ${response.status}`);
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return response;
}

async function api(path) {
  return (await request(path, "application/json")).json();
}

// ---------------------------------------------------------------- connection state and sign-in

const connection = { state: "" };

function setConnection(state, text) {
  const node = $("connection");
  node.dataset.state = state;
  if (connection.state !== state || node.textContent !== text) setText(node, text);
  connection.state = state;
}

// ?token=... (the contract) or #token=... (better: a fragment never reaches the server, so it
// cannot end up in an access log).  Either is taken out of the address bar and the history.
function takeTokenFromAddress() {
  const url = new URL(window.location.href);
  const fragment = new URLSearchParams(url.hash.slice(1));
  const value = url.searchParams.get("token") ?? fragment.get("token");
  if (value === null) return;
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  url.searchParams.delete("token");
  fragment.delete("token");
  const hash = fragment.toString();
  window.history.replaceState(window.history.state, "", url.pathname + url.search + (hash ? `#${hash}` : ""));
}

function askForToken(message) {
  stopPolling();
  setConnection("signed-out", "Signed out");
  $("sign-out").hidden = true;
  const dialog = $("login");
  setText($("login-message"), message);
  if (!dialog.open) dialog.showModal();
  $("login-token").focus();
}

function signedIn() {
  $("sign-out").hidden = !token();
}

function setUpSignIn() {
  const dialog = $("login");
  dialog.addEventListener("cancel", (event) => event.preventDefault()); // nothing works signed out
  $("login-form").addEventListener("submit", () => {
    const input = $("login-token");
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    input.value = "";
    // method="dialog" closes the dialog after this handler.
    start();
  });
  $("sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    clearLive();
    clearRecordings();
    askForToken("Signed out. Enter an API token to sign in again.");
  });
}

function authFailed() {
  const hadToken = Boolean(token());
  sessionStorage.removeItem(TOKEN_KEY);
  askForToken(hadToken ? "The API token was not accepted. Enter a valid token." : "This server needs an API token.");
}

// ---------------------------------------------------------------- live calls

const live = new Map(); // session_id -> {tbody, shape, cells, base, at}

function clearLive() {
  for (const entry of live.values()) entry.tbody.remove();
  live.clear();
  $("live-empty").hidden = false;
  setText($("live-count"), "");
}

function buildCall(shape) {
  const tbody = el("tbody", { className: "call" });
  const span = String(shape);
  const cells = {
    participants: el("th", { scope: "rowgroup", className: "participants" }),
    duration: el("time", { className: "duration" }),
    srtp: el("td", { className: "srtp" }),
    state: el("span", { className: "badge" }),
    callId: el("code", { className: "call-id" }),
    source: el("span", { className: "source" }),
    streams: [],
  };
  cells.participants.setAttribute("rowspan", span);
  cells.srtp.setAttribute("rowspan", span);
  for (let i = 0; i < shape; i += 1) {
    const stream = {
      label: el("span", { className: "label" }),
      detail: el("span", { className: "detail" }),
      codec: el("td", { className: "codec" }),
      loss: el("td", { className: "num loss" }),
      jitter: el("td", { className: "num jitter" }),
    };
    const row = el("tr");
    if (i === 0) {
      const duration = el("td", { className: "num" }, cells.duration);
      duration.setAttribute("rowspan", span);
      row.append(cells.participants, duration);
    }
    row.append(el("td", { className: "stream" }, stream.label, stream.detail), stream.codec, stream.loss, stream.jitter);
    if (i === 0) {
      const call = el("td", { className: "call-cell" }, cells.state, " ", cells.callId, el("br"), cells.source);
      call.setAttribute("rowspan", span);
      row.append(cells.srtp, call);
    }
    tbody.append(row);
    cells.streams.push(stream);
  }
  return { tbody, shape, cells, signature: "" };
}

function fillParticipants(cell, participants, src) {
  const list = el("ul", { className: "people" });
  for (const participant of participants) {
    const item = el("li");
    const main = participantLabel(participant);
    item.append(el("span", { className: "name", text: main }));
    if (participant.aor && participant.aor !== main) item.append(el("span", { className: "aor", text: participant.aor }));
    const numbers = (participant.numbers || []).filter((n) => n !== main && n !== participant.aor);
    if (numbers.length) item.append(el("span", { className: "numbers", text: numbers.join(", ") }));
    list.append(item);
  }
  if (!participants.length) list.append(el("li", { className: "unknown", text: src ? `unknown (from ${src.address})` : "unknown" }));
  cell.replaceChildren(list);
}

function fillCall(entry, session) {
  const { cells } = entry;
  const participants = session.participants || [];
  const signature = JSON.stringify(participants);
  if (signature !== entry.signature) {
    fillParticipants(cells.participants, participants, session.src);
    entry.signature = signature;
  }
  entry.tbody.dataset.sessionId = session.session_id;
  entry.tbody.dataset.callId = session.call_id || "";
  entry.tbody.dataset.state = session.state || "";
  const streams = session.streams || [];
  cells.streams.forEach((cell, index) => {
    const stream = streams[index];
    if (!stream) {
      setText(cell.label, "no media");
      for (const node of [cell.detail, cell.codec, cell.loss, cell.jitter]) setText(node, "–");
      return;
    }
    setText(cell.label, stream.label || `#${index + 1}`);
    const detail = [stream.direction, stream.on_hold ? "on hold" : "", stream.recorded === false ? "not recorded" : ""];
    setText(cell.detail, detail.filter(Boolean).join(" · "));
    setText(cell.codec, stream.codec || "–");
    setText(cell.loss, formatLoss(stream));
    cell.loss.title = `${stream.packets ?? 0} packets received, ${stream.lost ?? 0} lost, ${stream.reordered ?? 0} reordered`;
    setClass(cell.loss, "warn", lossRatio(stream) >= 0.01 && lossRatio(stream) < 0.05);
    setClass(cell.loss, "bad", lossRatio(stream) >= 0.05);
    setText(cell.jitter, formatJitter(stream.jitter_ms));
    setClass(cell.jitter, "warn", Number(stream.jitter_ms) >= 30);
  });
  setText(cells.srtp, formatSrtp(session.srtp));
  setClass(cells.srtp, "plain", formatSrtp(session.srtp) === "none");
  setText(cells.state, session.state || "");
  cells.state.dataset.state = session.state || "";
  setText(cells.callId, session.call_id || session.session_id);
  cells.callId.title = `Call-ID ${session.call_id}\nSession ${session.session_id}`;
  const src = session.src;
  setText(cells.source, src ? `from ${src.address}:${src.port}${src.transport ? ` (${src.transport})` : ""}` : "");
}

function renderLive(sessions, at) {
  const seen = new Set();
  let previous = $("live-empty");
  for (const session of sessions) {
    seen.add(session.session_id);
    const shape = Math.max(1, (session.streams || []).length);
    let entry = live.get(session.session_id);
    if (!entry || entry.shape !== shape) {
      const built = buildCall(shape);
      if (entry) entry.tbody.replaceWith(built.tbody);
      entry = built;
      live.set(session.session_id, entry);
    }
    fillCall(entry, session);
    entry.base = Number(session.duration_seconds) || 0;
    entry.at = at;
    if (previous.nextElementSibling !== entry.tbody) previous.after(entry.tbody);
    previous = entry.tbody;
  }
  let ended = false;
  for (const [id, entry] of live) {
    if (!seen.has(id)) {
      entry.tbody.remove();
      live.delete(id);
      ended = true;
    }
  }
  $("live-empty").hidden = sessions.length > 0;
  setText($("live-count"), sessions.length ? `(${sessions.length})` : "");
  tick();
  return ended;
}

// Between polls the durations go on counting from the last figures the server gave.
function tick() {
  const now = performance.now();
  for (const entry of live.values()) {
    const seconds = entry.base + (now - entry.at) / 1000;
    const node = entry.cells.duration;
    const whole = Math.floor(seconds);
    if (node.dataset.seconds !== String(whole)) {
      node.dataset.seconds = String(whole);
      node.dateTime = `PT${whole}S`;
      setText(node, formatDuration(whole));
    }
  }
}

// ---------------------------------------------------------------- server figures

let finishedSessions = null;

function renderServer(server) {
  setText($("server-version"), server.version ?? "–");
  setText($("server-uptime"), formatUptime(server.uptime_seconds));
  setText($("server-active"), String(server.active_sessions ?? "–"));
  setText($("server-finished"), String(server.finished_sessions ?? "–"));
  setText($("server-disk"), formatBytes(server.disk_free_bytes));
  setText($("server-directory"), server.recording_directory ?? "–");
  const changed = finishedSessions !== null && finishedSessions !== server.finished_sessions;
  finishedSessions = server.finished_sessions;
  return changed;
}

// ---------------------------------------------------------------- polling

let pollTimer = null;
let polling = false;

function stopPolling() {
  polling = false;
  clearTimeout(pollTimer);
  pollTimer = null;
}

function schedule(delay) {
  clearTimeout(pollTimer);
  if (polling) pollTimer = setTimeout(poll, delay ?? (document.hidden ? HIDDEN_INTERVAL_MS : LIVE_INTERVAL_MS));
}

async function poll() {
  pollTimer = null;
  try {
    const [sessions, server] = await Promise.all([api("/api/sessions"), api("/api/server")]);
    if (!polling) return;
    const ended = renderLive(sessions.sessions || [], performance.now());
    const finished = renderServer(server);
    setConnection("live", "Live");
    if (ended || finished) loadRecordings();
  } catch (error) {
    if (error instanceof AuthError) {
      authFailed();
      return;
    }
    setConnection("offline", `No update (${error.message}), retrying…`);
  }
  schedule();
}

function start() {
  signedIn();
  polling = true;
  setConnection("connecting", "Connecting…");
  schedule(0);
  loadRecordings();
}

// ---------------------------------------------------------------- recordings

const recordings = {
  query: {},
  offset: 0,
  total: 0,
  generation: 0,
  items: new Map(), // session_id -> {node, blobs: [url]}
};

function clearRecordings() {
  for (const item of recordings.items.values()) forget(item);
  recordings.items.clear();
  $("recordings-list").replaceChildren();
  setText($("recordings-status"), "");
  setText($("recordings-count"), "");
}

function forget(item) {
  for (const url of item.blobs) URL.revokeObjectURL(url);
  item.blobs = [];
  item.node.remove();
}

function dayStart(value, days = 0) {
  const [y, m, d] = value.split("-").map(Number);
  return new Date(y, m - 1, d + days).toISOString();
}

function readSearch() {
  const query = {};
  const participant = $("search-participant").value.trim();
  const callId = $("search-call-id").value.trim();
  const from = $("search-from").value;
  const to = $("search-to").value;
  if (participant) query.participant = participant;
  if (callId) query.call_id = callId;
  if (from) query.from = dayStart(from);
  if (to) query.to = dayStart(to, 1); // the whole "to" day
  return query;
}

async function loadRecordings() {
  const generation = ++recordings.generation;
  const params = new URLSearchParams({ ...recordings.query, limit: String(PAGE_SIZE), offset: String(recordings.offset) });
  const list = $("recordings-list");
  list.setAttribute("aria-busy", "true");
  try {
    const data = await api(`/api/recordings?${params}`);
    if (generation !== recordings.generation) return;
    renderRecordings(data.recordings || [], Number(data.total) || 0);
  } catch (error) {
    if (generation !== recordings.generation) return;
    if (error instanceof AuthError) return; // the live poll asks for a token
    setText($("recordings-status"), `Could not load recordings (${error.message}).`);
  } finally {
    if (generation === recordings.generation) list.removeAttribute("aria-busy");
  }
}

function renderRecordings(items, total) {
  const list = $("recordings-list");
  recordings.total = total;
  const seen = new Set();
  let previous = null;
  for (const recording of items) {
    seen.add(recording.session_id);
    let item = recordings.items.get(recording.session_id);
    if (!item) {
      item = buildRecording(recording);
      recordings.items.set(recording.session_id, item);
    }
    fillRecording(item, recording);
    const expected = previous ? previous.nextElementSibling : list.firstElementChild;
    if (expected !== item.node) {
      if (previous) previous.after(item.node);
      else list.prepend(item.node);
    }
    previous = item.node;
  }
  for (const [id, item] of recordings.items) {
    if (!seen.has(id)) {
      forget(item);
      recordings.items.delete(id);
    }
  }
  const filtered = Object.keys(recordings.query).length > 0;
  setText($("recordings-count"), total ? `(${total})` : "");
  setText($("recordings-status"), items.length ? "" : filtered ? "No recordings match the search." : "No recordings yet.");
  const first = items.length ? recordings.offset + 1 : 0;
  setText($("page-range"), items.length ? `${first}–${recordings.offset + items.length} of ${total}` : "");
  $("page-newer").disabled = recordings.offset === 0;
  $("page-older").disabled = recordings.offset + items.length >= total;
  $("pager").hidden = recordings.offset === 0 && items.length >= total;
}

function buildRecording(recording) {
  const node = $("recording-template").content.firstElementChild.cloneNode(true);
  const item = { node, blobs: [], loaded: false, signature: "" };
  const details = node.querySelector("details");
  details.addEventListener("toggle", () => {
    if (details.open && !item.loaded) {
      item.loaded = true;
      attachAudio(item);
    }
  });
  return item;
}

function fact(list, term, value, className) {
  list.append(el("div", {}, el("dt", { text: term }), el("dd", { text: value, className })));
}

function fillRecording(item, recording) {
  const signature = JSON.stringify(recording);
  if (signature === item.signature) return;
  item.signature = signature;
  const { node } = item;
  node.dataset.sessionId = recording.session_id;
  node.dataset.callId = recording.call_id || "";
  const participants = recording.participants || [];
  const sealed = recording.participants_encrypted === true;
  const names = participants.map(participantLabel).join(", ") || (sealed ? "participants encrypted" : "unknown participants");
  const length = secondsBetween(recording.started_at, recording.ended_at);
  const time = node.querySelector(".when time");
  time.dateTime = recording.started_at || "";
  setText(time, formatDate(recording.started_at));
  setText(node.querySelector(".length"), length === null ? "–" : formatDuration(length));
  setText(node.querySelector(".who"), names);
  setText(node.querySelector(".reason"), recording.end_reason || (recording.ended_at ? "" : "in progress"));

  const facts = node.querySelector(".facts");
  facts.replaceChildren();
  fact(facts, "Call ID", recording.call_id || "–", "mono");
  fact(facts, "Session", recording.session_id, "mono");
  fact(facts, "Started", formatDate(recording.started_at));
  fact(facts, "Ended", formatDate(recording.ended_at));
  fact(facts, "End reason", recording.end_reason || "–");
  for (const participant of participants) {
    const more = [participant.aor, ...(participant.numbers || [])].filter((v) => v && v !== participantLabel(participant));
    fact(facts, "Participant", [participantLabel(participant), ...more].join(" · "));
  }

  // Players: one per stream, then the mix.  Sources are attached when the entry is opened.
  const players = node.querySelector(".players");
  for (const url of item.blobs) URL.revokeObjectURL(url);
  item.blobs = [];
  players.replaceChildren();
  const what = `call ${recording.call_id || recording.session_id}`;
  for (const stream of recording.streams || []) {
    const title = `Stream ${stream.label}${stream.codec ? ` (${stream.codec})` : ""}`;
    players.append(player(title, stream.audio_url, `${what}, ${title}`, `${recording.session_id}-${stream.label}.wav`, stream.label));
  }
  if (recording.mix) players.append(player("Mix", recording.mix.audio_url, `${what}, mix`, `${recording.session_id}-mix.wav`, "mix"));
  if (!players.childElementCount) players.append(el("p", { className: "status", text: "No audio files." }));
  if (item.loaded) attachAudio(item);
}

function player(title, url, label, filename, key) {
  const audio = el("audio", { controls: true, preload: "metadata", "aria-label": label });
  if (url) audio.dataset.url = url;
  audio.dataset.stream = key;
  const download = el("a", { className: "download", text: "Download", download: filename, hidden: true });
  const status = el("span", { className: "status", role: "status", text: url ? "" : "not available" });
  return el("figure", { className: "player", "data-stream": key }, el("figcaption", { text: title }), audio, el("span", { className: "links" }, download, status));
}

async function attachAudio(item) {
  const audios = item.node.querySelectorAll("audio[data-url]");
  await Promise.all(Array.from(audios, (audio) => attachOne(item, audio)));
}

async function attachOne(item, audio) {
  const figure = audio.closest("figure");
  const status = figure.querySelector(".status");
  const download = figure.querySelector(".download");
  const url = audio.dataset.url;
  if (audio.getAttribute("src")) return;
  if (!token()) {
    // No header to add: the browser sends whatever credentials it holds for this origin.
    audio.src = url;
    download.href = url;
    download.hidden = false;
    return;
  }
  setText(status, "loading…");
  try {
    const blob = await (await request(url, "audio/*")).blob();
    if (!item.node.isConnected) return;
    const objectUrl = URL.createObjectURL(blob);
    item.blobs.push(objectUrl);
    audio.src = objectUrl;
    download.href = objectUrl;
    download.hidden = false;
    setText(status, "");
  } catch (error) {
    setText(status, `could not load audio (${error.message})`);
  }
}

function setUpRecordings() {
  const form = $("search");
  let timer = null;
  const search = () => {
    clearTimeout(timer);
    recordings.query = readSearch();
    recordings.offset = 0;
    loadRecordings();
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    search();
  });
  form.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(search, SEARCH_DELAY_MS);
  });
  form.addEventListener("reset", () => setTimeout(search, 0)); // after the fields are cleared
  $("page-newer").addEventListener("click", () => {
    recordings.offset = Math.max(0, recordings.offset - PAGE_SIZE);
    loadRecordings();
  });
  $("page-older").addEventListener("click", () => {
    recordings.offset += PAGE_SIZE;
    loadRecordings();
  });
}

// ---------------------------------------------------------------- start

function main() {
  takeTokenFromAddress();
  setUpSignIn();
  setUpRecordings();
  setInterval(tick, 250);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && polling) schedule(0);
  });
  start();
}

if (typeof document !== "undefined") main();
