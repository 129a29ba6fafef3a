// Drives the siprecd dashboard in Debian's headless Chromium with playwright-core.
//
// Protocol: one JSON command per line on stdin, one JSON reply per line on stdout
// ({"ok": true, "result": ...} or {"ok": false, "error": "..."}); diagnostics go to stderr.
// The test (tests/e2e/test_dashboard_e2e.py) keeps the story in Python and asks this script
// for page-level steps; see README.md for the commands.
//
//   node driver.mjs                       # serve commands from stdin
//   node driver.mjs --screenshot URL PNG  # one page, one screenshot (by hand)

import { createInterface } from "node:readline";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const EXECUTABLE = process.env.CHROMIUM || "/usr/bin/chromium";
// This machine's network is closed: without these Chromium keeps trying Google's services.
const FLAGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const problems = { console: [], page: [], requests: [] };
let context = null;
let page = null;
let navigations = 0;
let profile = null;

async function launch() {
  // A fresh, throwaway profile every run (launchPersistentContext is how Playwright takes
  // --user-data-dir).
  profile = mkdtempSync(join(tmpdir(), "siprecd-chromium-"));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: EXECUTABLE,
    headless: true,
    args: FLAGS,
    viewport: { width: 1280, height: 900 },
    locale: "en-GB",
    timezoneId: "UTC",
    colorScheme: "light",
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (message) => {
    if (message.type() === "error" || message.type() === "warning") {
      problems.console.push(`${message.type()}: ${message.text()}`);
    }
  });
  page.on("pageerror", (error) => problems.page.push(String(error)));
  page.on("requestfailed", (request) => {
    // A blob: fetch aborted when a player is replaced is not a problem of the server.
    if (!request.url().startsWith("blob:")) problems.requests.push(`${request.method()} ${request.url()}: ${request.failure()?.errorText}`);
  });
  page.on("response", (response) => {
    if (response.status() >= 400) problems.requests.push(`${response.request().method()} ${response.url()}: HTTP ${response.status()}`);
  });
  page.on("framenavigated", (frame) => {
    if (frame === page.mainFrame()) navigations += 1;
  });
}

async function close() {
  if (context) await context.close();
  context = null;
  if (profile) rmSync(profile, { recursive: true, force: true });
  profile = null;
}

// What a live-call <tbody> shows, as text, read the way a user reads the table.
function readCall(tbody) {
  const texts = (selector) => Array.from(tbody.querySelectorAll(selector), (node) => node.textContent.trim());
  const duration = tbody.querySelector("time.duration");
  return {
    sessionId: tbody.dataset.sessionId,
    callId: tbody.dataset.callId,
    state: tbody.dataset.state,
    participants: tbody.querySelector("th.participants").innerText.trim(),
    duration: duration.textContent.trim(),
    seconds: Number(duration.dataset.seconds),
    streams: texts("td.stream .label"),
    codecs: texts("td.codec"),
    loss: texts("td.loss"),
    jitter: texts("td.jitter"),
    srtp: tbody.querySelector("td.srtp").textContent.trim(),
  };
}

const commands = {
  async open({ url }) {
    await page.goto(url, { waitUntil: "load" });
    return { url: page.url(), navigations };
  },

  // A value kept in the page's JS heap: it survives only if the page is not reloaded.
  async mark() {
    return page.evaluate(() => (window.__siprecdTestMark = Math.random().toString(36).slice(2)));
  },

  async state() {
    return {
      url: page.url(),
      navigations,
      mark: await page.evaluate(() => window.__siprecdTestMark ?? null),
      connection: await page.locator("#connection").textContent(),
      dialogOpen: await page.evaluate(() => document.getElementById("login").open),
      dialogMessage: await page.locator("#login-message").textContent(),
      token: await page.evaluate(() => sessionStorage.getItem("siprecd.apiToken")),
    };
  },

  // Waits until a live call whose participants cell contains `text` shows at least
  // `minSeconds` of duration; returns what its row shows.
  async waitLive({ text, minSeconds = 0, timeout = 15000 }) {
    const handle = await page.waitForFunction(
      ({ text, minSeconds }) => {
        for (const tbody of document.querySelectorAll("#live-table tbody.call")) {
          const who = tbody.querySelector("th.participants");
          const duration = tbody.querySelector("time.duration");
          if (who && who.textContent.includes(text) && Number(duration.dataset.seconds) >= minSeconds) return tbody;
        }
        return null;
      },
      { text, minSeconds },
      { timeout, polling: 100 },
    );
    return handle.evaluate(readCall);
  },

  async liveCalls() {
    const bodies = await page.$$("#live-table tbody.call");
    return Promise.all(bodies.map((body) => body.evaluate(readCall)));
  },

  async waitNoLive({ text, timeout = 15000 }) {
    await page.waitForFunction(
      (text) => !Array.from(document.querySelectorAll("#live-table tbody.call th.participants")).some((n) => n.textContent.includes(text)),
      text,
      { timeout, polling: 100 },
    );
    return true;
  },

  async server() {
    return page.$$eval(".figures div", (nodes) => Object.fromEntries(nodes.map((n) => [n.querySelector("dt").textContent, n.querySelector("dd").textContent])));
  },

  async screenshot({ path, fullPage = true }) {
    await page.screenshot({ path, fullPage });
    return path;
  },

  async waitRecording({ callId, timeout = 20000 }) {
    await page.locator(`#recordings-list li.recording[data-call-id="${callId}"]`).waitFor({ timeout });
    return commands.recordings();
  },

  async recordings() {
    return page.$$eval("#recordings-list li.recording", (nodes) =>
      nodes.map((n) => ({
        sessionId: n.dataset.sessionId,
        callId: n.dataset.callId,
        summary: n.querySelector("summary").innerText.replace(/\s+/g, " ").trim(),
        players: Array.from(n.querySelectorAll("figure.player figcaption"), (c) => c.textContent),
      })),
    );
  },

  // Types into the search form as a user would, submits, and waits for the list to settle.
  async search({ participant = "", callId = "", timeout = 10000 }) {
    const form = page.getByRole("search", { name: "Search recordings" });
    await form.getByLabel("Participant").fill(participant);
    await form.getByLabel("Call ID").fill(callId);
    await form.getByRole("button", { name: "Search" }).click();
    await page.waitForFunction(
      ({ participant, callId }) => {
        const list = document.getElementById("recordings-list");
        if (list.hasAttribute("aria-busy")) return false;
        const items = Array.from(list.querySelectorAll("li.recording"));
        return items.every((n) => (!callId || n.dataset.callId.includes(callId)) && (!participant || n.textContent.includes(participant)));
      },
      { participant, callId },
      { timeout, polling: 100 },
    );
    return { recordings: await commands.recordings(), status: await page.locator("#recordings-status").textContent() };
  },

  // Opens a recording (click on its summary) and waits until every <audio> of it has a source
  // whose metadata loaded with a duration > 0.
  async playable({ callId, timeout = 15000 }) {
    const item = page.locator(`#recordings-list li.recording[data-call-id="${callId}"]`);
    const open = await item.locator("details").evaluate((d) => d.open);
    if (!open) await item.locator("summary").click();
    const audios = item.locator("audio");
    const count = await audios.count();
    const results = [];
    for (let i = 0; i < count; i += 1) {
      const audio = audios.nth(i);
      const found = await audio.evaluate(
        (node, timeout) =>
          new Promise((resolve) => {
            const report = (event) =>
              resolve({
                stream: node.dataset.stream,
                label: node.getAttribute("aria-label"),
                scheme: (node.currentSrc || node.src || "").split(":")[0],
                duration: node.duration,
                readyState: node.readyState,
                error: node.error ? `${node.error.code} ${node.error.message}` : null,
                event,
              });
            if (node.readyState >= 1 && node.duration > 0) return report("already");
            node.addEventListener("loadedmetadata", () => report("loadedmetadata"), { once: true });
            node.addEventListener("error", () => report("error"), { once: true });
            setTimeout(() => report("timeout"), timeout);
          }),
        timeout,
      );
      results.push(found);
    }
    return results;
  },

  async login({ token, timeout = 10000 }) {
    await page.locator("#login[open]").waitFor({ timeout });
    await page.getByLabel("API token").fill(token);
    await page.getByRole("button", { name: "Sign in" }).click();
    return true;
  },

  async waitConnection({ text, timeout = 10000 }) {
    await page.waitForFunction((text) => document.getElementById("connection").textContent === text, text, { timeout, polling: 100 });
    return true;
  },

  // Waits for the sign-in dialog (whose message contains `contains`); returns the message.
  async waitDialog({ contains = "", timeout = 10000 }) {
    await page.waitForFunction(
      (contains) => document.getElementById("login").open && document.getElementById("login-message").textContent.includes(contains),
      contains,
      { timeout, polling: 100 },
    );
    return page.locator("#login-message").textContent();
  },

  async evaluate({ expression }) {
    return page.evaluate(expression);
  },

  async problems() {
    return problems;
  },

  async close() {
    await close();
    return true;
  },
};

async function serve() {
  await launch();
  process.stdout.write(`${JSON.stringify({ ok: true, result: { ready: true, version: context.browser()?.version() ?? null } })}\n`);
  const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of lines) {
    if (!line.trim()) continue;
    let reply;
    try {
      const { cmd, ...args } = JSON.parse(line);
      if (!Object.hasOwn(commands, cmd)) throw new Error(`unknown command ${cmd}`);
      reply = { ok: true, result: (await commands[cmd](args)) ?? null };
    } catch (error) {
      reply = { ok: false, error: String(error?.stack || error) };
    }
    process.stdout.write(`${JSON.stringify(reply)}\n`);
    if (context === null) break;
  }
  await close();
  lines.close();
  process.exit(0); // stdin may still be open: do not wait for it
}

async function screenshotOnce(url, path) {
  await launch();
  try {
    await page.goto(url, { waitUntil: "load" });
    await page.waitForTimeout(1500);
    await page.screenshot({ path, fullPage: true });
    console.error(JSON.stringify(problems));
  } finally {
    await close();
  }
}

const [flag, url, path] = process.argv.slice(2);
const run = flag === "--screenshot" ? screenshotOnce(url, path) : serve();
run.catch(async (error) => {
  console.error(error);
  await close().catch(() => {});
  process.exit(1);
});
