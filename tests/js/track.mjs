// GrowthBook's JavaScript SDK evaluating a payload for many subjects, with assay's tracking
// callback (the module shipped in the Python package) reporting the exposures.
//
// stdin: {"module": path of assay-tracking.mjs, "options": {apiHost, clientKey, batchSize, ...},
//         "payload" (else the SDK downloads it with apiHost and clientKey), "flag", "subjects": [attributes...], "views": n,
//         "lose_answers": n (the first n answers are lost after the server handled the request),
//         "fail_first": n (the first n requests fail before reaching the server),
//         "ids": [[experiment, variant, subject], ...] (event ids to compute)}
// stdout: {"stats", "values": [value per subject], "ids": [...]}
import { webcrypto } from "node:crypto";
import { pathToFileURL } from "node:url";
import { GrowthBookClient } from "@growthbook/growthbook";

// Browsers and Node 19+ have Web Crypto as a global; Node 18 (Debian 12's) only behind a flag.
globalThis.crypto ??= webcrypto;

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const input = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const { assayTracking, exposureEventId } = await import(pathToFileURL(input.module).href);

let requests = 0;
async function unreliableFetch(url, init) {
  requests += 1;
  if (requests <= (input.fail_first ?? 0)) throw new TypeError("fetch failed (test)");
  const response = await fetch(url, init);
  if (requests <= (input.fail_first ?? 0) + (input.lose_answers ?? 0)) throw new TypeError("answer lost (test)");
  return response;
}

const tracker = assayTracking({ ...input.options, backoff: 10, fetch: unreliableFetch });
let client;
if (input.payload) {
  client = new GrowthBookClient({ trackingCallback: tracker.trackingCallback });
  client.initSync({ payload: input.payload, streaming: false });
} else {
  // As an application does: the SDK downloads the payload from GET /api/features/{clientKey}.
  const { apiHost, clientKey } = input.options;
  client = new GrowthBookClient({ apiHost, clientKey, trackingCallback: tracker.trackingCallback });
  const loaded = await client.init({ streaming: false, timeout: 10000 });
  if (!loaded.success) throw new Error(`the SDK could not load its payload: ${JSON.stringify(loaded)}`);
}

const values = [];
for (let view = 0; view < (input.views ?? 1); view++) {
  for (const [i, attributes] of input.subjects.entries()) {
    // A fresh user context per view: the SDK would otherwise skip the repeated view itself.
    const value = client.evalFeature(input.flag, { attributes }).value;
    if (view === 0) values[i] = value;
  }
}
await tracker.close();
const ids = await Promise.all((input.ids ?? []).map(([e, v, s]) => exposureEventId(e, v, s)));
process.stdout.write(JSON.stringify({ stats: tracker.stats, values, ids, requests }));
