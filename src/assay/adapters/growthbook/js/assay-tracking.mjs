// Exposures from GrowthBook's JavaScript SDK to assay: a tracking callback that batches.
//
//   import { assayTracking } from "./assay-tracking.mjs";
//   const tracker = assayTracking({ apiHost: "https://assay.example.com", clientKey: "sdk-..." });
//   const gb = new GrowthBook({ ..., trackingCallback: tracker.trackingCallback });
//
// Works with `GrowthBook` (callback(experiment, result)) and `GrowthBookClient`
// (callback(experiment, result, user)). Each exposure goes to assay as an `exposure` event,
// to `POST {apiHost}/api/events/{clientKey}` (or to `url` with `headers`, for a server
// holding an API key: `.../api/v1/events?project=P` and an Authorization header).
//
// The rules it keeps (docs/sdk-tracking.md):
// - The callback never throws and never waits: it queues (at most `maxQueue` events; more
//   are dropped and counted).
// - Batches of up to `batchSize` leave at least every `flushInterval` ms, or at `flush()`.
// - A failure that may pass (network error, 408, 429, 5xx) is retried with exponential
//   back-off and jitter, `Retry-After` honoured, up to `maxAttempts`; other answers are final.
// - Each event's id is SHA-256 over experiment, variant and subject (the Python callback's
//   `exposure_event_id`), so retries and repeated views are stored once. The tracker also
//   skips exposures it queued before. Without Web Crypto (a page served over plain http)
//   events go without an id; assay still keeps one exposure per subject and variant.
// - When a page is hidden, what is queued leaves with `navigator.sendBeacon` (a keepalive
//   `fetch` when the beacon is refused).
// - The subject is the `id` attribute when the SDK passes the user, else `result.hashValue`;
//   `subject(experiment, result, user)` chooses otherwise.

const RETRIED = new Set([408, 429]);
const MAX_SUBJECT_LENGTH = 512;

export async function exposureEventId(experiment, variant, subject) {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) return null;
  const data = new TextEncoder().encode(`${experiment}\0${variant}\0${subject}`);
  const digest = new Uint8Array(await subtle.digest("SHA-256", data));
  const hex = Array.from(digest.slice(0, 16), (b) => b.toString(16).padStart(2, "0")).join("");
  return `gb-${hex}`;
}

function defaultSubject(experiment, result, user) {
  const id = user?.attributes?.id;
  if (id !== undefined && id !== null && id !== "") return String(id);
  const hashed = result?.hashValue;
  return hashed === undefined || hashed === null || hashed === "" ? null : String(hashed);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export function assayTracking(options) {
  const {
    apiHost,
    clientKey,
    url = `${String(apiHost).replace(/\/+$/, "")}/api/events/${encodeURIComponent(clientKey)}`,
    headers = {},
    batchSize = 100,
    flushInterval = 1000,
    maxQueue = 1000,
    maxAttempts = 6,
    backoff = 500,
    maxBackoff = 30000,
    remember = 10000,
    subject = defaultSubject,
    fetch = globalThis.fetch.bind(globalThis),
  } = options;
  if (!options.url && !(apiHost && clientKey)) throw new Error("assayTracking needs apiHost and clientKey, or url");

  const stats = { queued: 0, repeated: 0, dropped: 0, batches: 0, recorded: 0, deduplicated: 0, rejected: 0, failed: 0, retries: 0 };
  const seen = new Map(); // insertion-ordered: the oldest is forgotten first
  const hashing = new Set();
  let queue = [];
  let timer = null;
  let sending = Promise.resolve();

  const requestHeaders = { "Content-Type": "application/json", ...headers };

  async function deliver(batch) {
    const body = JSON.stringify({ events: batch });
    for (let attempt = 1; ; attempt++) {
      let retry;
      let wait = null;
      try {
        const response = await fetch(url, { method: "POST", headers: requestHeaders, body, keepalive: body.length < 60000 });
        if (response.ok) {
          const answer = await response.json().catch(() => ({}));
          stats.batches += 1;
          stats.recorded += answer.recorded ?? 0;
          stats.deduplicated += answer.deduplicated ?? 0;
          stats.rejected += answer.rejected?.length ?? 0;
          return;
        }
        retry = RETRIED.has(response.status) || response.status >= 500;
        const after = Number(response.headers.get("Retry-After"));
        if (response.headers.get("Retry-After") !== null && Number.isFinite(after)) wait = after * 1000;
      } catch {
        retry = true;
      }
      if (!retry || attempt >= maxAttempts) {
        stats.failed += batch.length;
        return;
      }
      stats.retries += 1;
      // Jitter: clients that failed together do not all come back together.
      await sleep(Math.min(maxBackoff, wait ?? backoff * 2 ** (attempt - 1) * (0.5 + Math.random() / 2)));
    }
  }

  function drain() {
    if (timer !== null) {
      clearTimeout(timer);
      timer = null;
    }
    sending = sending.then(async () => {
      while (queue.length > 0) await deliver(queue.splice(0, batchSize));
    });
    return sending;
  }

  function enqueue(event) {
    if (queue.length >= maxQueue) {
      stats.dropped += 1;
      return false;
    }
    queue.push(event);
    stats.queued += 1;
    if (queue.length >= batchSize) drain();
    else if (timer === null) {
      timer = setTimeout(drain, flushInterval);
      timer.unref?.(); // never keep Node alive for a batch: close() sends it
    }
    return true;
  }

  async function track(experiment, result, user) {
    const who = subject(experiment, result, user);
    const key = experiment?.key;
    const variant = result?.key;
    if (!who || who.length > MAX_SUBJECT_LENGTH || !key || variant === undefined || variant === null) {
      stats.dropped += 1;
      return;
    }
    const seenKey = `${key}\0${variant}\0${who}`;
    if (seen.has(seenKey)) {
      stats.repeated += 1;
      return;
    }
    seen.set(seenKey, true);
    if (seen.size > remember) seen.delete(seen.keys().next().value);
    const event = { type: "exposure", experiment: key, subject: who, variant: String(variant), timestamp: new Date().toISOString() };
    const id = await exposureEventId(key, String(variant), who).catch(() => null);
    if (id) event.event_id = id;
    if (!enqueue(event)) seen.delete(seenKey); // a later view may try again
  }

  function trackingCallback(experiment, result, user) {
    try {
      const pending = track(experiment, result, user).catch(() => {
        stats.dropped += 1;
      });
      hashing.add(pending);
      pending.finally(() => hashing.delete(pending));
    } catch {
      stats.dropped += 1;
    }
  }

  async function flush() {
    await Promise.all([...hashing]);
    await drain();
  }

  // A hidden page may never come back: send what is queued with a beacon, which the browser
  // delivers after the page is gone. As text/plain (assay reads it as JSON): a beacon to
  // another origin may carry only a type that needs no CORS preflight.
  function beacon() {
    const beacons = globalThis.navigator?.sendBeacon?.bind(globalThis.navigator);
    while (queue.length > 0) {
      const body = JSON.stringify({ events: queue.splice(0, batchSize) });
      let sent = false;
      try {
        sent = !!beacons && Object.keys(headers).length === 0 && beacons(url, new Blob([body], { type: "text/plain;charset=UTF-8" }));
      } catch {
        sent = false;
      }
      if (!sent) fetch(url, { method: "POST", headers: requestHeaders, body, keepalive: true }).catch(() => {});
    }
  }
  if (typeof document !== "undefined" && typeof document.addEventListener === "function") {
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "hidden") beacon();
    });
    globalThis.addEventListener?.("pagehide", beacon);
  }

  return { trackingCallback, flush, close: flush, stats };
}
