// Unit tests of the dashboard's pure formatting functions (node --test format.test.mjs).
// The module starts the page only when a document exists, so Node can import it as is.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

// Imported from a data: URL, which is always an ES module whatever Node's defaults for .js.
const source = readFileSync(new URL("../../../siprecd/web/static/app.js", import.meta.url));
const { formatBytes, formatDuration, formatJitter, formatLoss, formatSrtp, formatUptime, participantLabel } = await import(
  `data:text/javascript;base64,${source.toString("base64")}`
);

test("durations", () => {
  assert.equal(formatDuration(0), "0:00");
  assert.equal(formatDuration(59.9), "0:59");
  assert.equal(formatDuration(61), "1:01");
  assert.equal(formatDuration(3600 + 62), "1:01:02");
  assert.equal(formatDuration(-5), "0:00");
  assert.equal(formatDuration(null), "0:00");
  assert.equal(formatUptime(86400 * 2 + 3723), "2 d 01:02:03");
  assert.equal(formatUptime(42), "0:42");
});

test("bytes", () => {
  assert.equal(formatBytes(0), "0 B");
  assert.equal(formatBytes(1023), "1023 B");
  assert.equal(formatBytes(1536), "1.50 KiB");
  assert.equal(formatBytes(53 * 2 ** 30), "53.0 GiB");
  assert.equal(formatBytes(null), "unknown");
  assert.equal(formatBytes(undefined), "unknown");
});

test("loss and jitter", () => {
  assert.equal(formatLoss({ packets: 0, lost: 0 }), "–");
  assert.equal(formatLoss({ packets: 98, lost: 2 }), "2 (2.0%)");
  assert.equal(formatLoss({ packets: 100, lost: 0 }), "0 (0.0%)");
  assert.equal(formatJitter(3.25), "3.3 ms");
  assert.equal(formatJitter(null), "–");
});

test("srtp method", () => {
  assert.equal(formatSrtp(null), "none");
  assert.equal(formatSrtp(undefined), "none");
  assert.equal(formatSrtp("SDES"), "SDES");
  assert.equal(formatSrtp({ method: "SDES", suite: "AES_CM_128_HMAC_SHA1_80" }), "SDES · AES_CM_128_HMAC_SHA1_80");
  assert.equal(formatSrtp({ keying: "DTLS-SRTP" }), "DTLS-SRTP");
  assert.equal(formatSrtp({}), "yes");
});

test("participants", () => {
  assert.equal(participantLabel({ name: "Alice", aor: "sip:a@x" }), "Alice");
  assert.equal(participantLabel({ name: "", aor: "sip:a@x" }), "sip:a@x");
  assert.equal(participantLabel({ numbers: ["+1", "+2"] }), "+1, +2");
  assert.equal(participantLabel({ id: "p0" }), "p0");
});
