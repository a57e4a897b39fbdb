// assay-tracking.mjs alone, against a fake fetch and a fake page: what each case sent.
//
// stdin: {"module": path of assay-tracking.mjs}
// stdout: {case name: {"requests": [{"url", "headers", "events"}], "beacons": [...], "stats"}}
import { webcrypto } from "node:crypto";
import { pathToFileURL } from "node:url";

// Browsers and Node 19+ have Web Crypto as a global; Node 18 (Debian 12's) only behind a flag.
globalThis.crypto ??= webcrypto;

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const input = JSON.parse(Buffer.concat(chunks).toString("utf8"));

// A page: listeners of `document` and `window`, and a beacon that takes what it is given.
const listeners = {};
const beacons = [];
let beaconAccepts = true;
globalThis.document = {
  visibilityState: "visible",
  addEventListener: (name, fn) => (listeners[name] ??= []).push(fn),
};
globalThis.addEventListener = (name, fn) => (listeners[`window:${name}`] ??= []).push(fn);
Object.defineProperty(globalThis, "navigator", {
  value: { sendBeacon: (url, blob) => (beacons.push({ url, blob }), beaconAccepts) },
  configurable: true,
});
const { assayTracking } = await import(pathToFileURL(input.module).href);

// A server answering `statuses` in turn (then 200), recording every request.
function server(statuses, headers = {}) {
  const requests = [];
  const fetch = async (url, init) => {
    requests.push({ url, headers: init.headers, events: JSON.parse(init.body).events });
    const status = statuses.length ? statuses.shift() : 200;
    const n = JSON.parse(init.body).events.length;
    return new Response(JSON.stringify(status === 200 ? { received: n, recorded: n, deduplicated: 0, pending: 0, rejected: [] } : {}), {
      status,
      headers: { "Content-Type": "application/json", ...headers },
    });
  };
  return { requests, fetch };
}

// Event ids are computed asynchronously (Web Crypto): wait until `n` events are queued.
async function queued(tracker, n) {
  for (let i = 0; i < 2000 && tracker.stats.queued < n; i++) await new Promise((r) => setTimeout(r, 5));
}

const view = (tracker, subject, variant = "a", experiment = "e") =>
  tracker.trackingCallback({ key: experiment }, { key: variant, hashValue: subject }, { attributes: { id: subject } });

const out = {};
async function run(name, statuses, options, act, headers) {
  const s = server(statuses, headers);
  const tracker = assayTracking({ apiHost: "http://assay.test/", clientKey: "sdk-k/1", backoff: 1, flushInterval: 60000, fetch: s.fetch, ...options });
  beacons.length = 0;
  await act(tracker);
  const sent = await Promise.all(beacons.map(async (b) => ({ url: b.url, type: b.blob.type, events: JSON.parse(await b.blob.text()).events })));
  out[name] = { requests: s.requests, beacons: sent, stats: { ...tracker.stats } };
}

await run("batches", [], { batchSize: 10 }, async (t) => {
  for (let i = 0; i < 25; i++) {
    view(t, `u${i}`);
    view(t, `u${i}`);
  }
  view(t, "u0", "b");
  await t.flush();
});
await run("retried", [503, 429, 500], {}, async (t) => {
  view(t, "u1");
  await t.flush();
}, { "Retry-After": "0" });
await run("final", [404], {}, async (t) => {
  view(t, "u1");
  await t.flush();
});
await run("exhausted", [503, 503, 503, 503], { maxAttempts: 3 }, async (t) => {
  view(t, "u1");
  await t.flush();
});
await run("bounded", [], { maxQueue: 5, batchSize: 100 }, async (t) => {
  for (let i = 0; i < 8; i++) view(t, `u${i}`);
  await t.flush();
});
await run("hidden", [], {}, async (t) => {
  for (let i = 0; i < 3; i++) view(t, `u${i}`);
  await queued(t, 3);
  globalThis.document.visibilityState = "hidden";
  for (const fn of listeners.visibilitychange) fn();
  globalThis.document.visibilityState = "visible";
  await t.flush();
});
await run("hidden, beacon refused", [], {}, async (t) => {
  beaconAccepts = false;
  view(t, "u1");
  await queued(t, 1);
  for (const fn of listeners["window:pagehide"]) fn();
  await t.flush();
});
process.stdout.write(JSON.stringify(out));
