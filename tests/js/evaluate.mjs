// Evaluates a GrowthBook payload with GrowthBook's JavaScript SDK, as an application would
// locally, for many subjects in one process (the tests start one Node per batch, never one
// per subject).
//
// stdin:  {"payload": <the SDK payload>, "flags": [key, ...], "subjects": [{"attributes": {...}}, ...]}
// stdout: {"results": [[{"value", "source", "experiment", "variant", "in_experiment"}, ...per flag], ...per subject]}
//
// `experiment` is the experiment's key and `variant` the variation's meta key (the SDK's
// `result.key`), both null when the subject is not in an experiment.
import { GrowthBookClient } from "@growthbook/growthbook";

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

const input = await readStdin();
const client = new GrowthBookClient({});
client.initSync({ payload: input.payload, streaming: false });

const results = input.subjects.map((subject) =>
  input.flags.map((key) => {
    const result = client.evalFeature(key, { attributes: subject.attributes });
    const assigned = result.experimentResult?.inExperiment === true;
    return {
      value: result.value === undefined ? null : result.value,
      source: result.source,
      in_experiment: assigned,
      experiment: assigned ? result.experiment.key : null,
      variant: assigned ? result.experimentResult.key : null,
    };
  }),
);
process.stdout.write(JSON.stringify({ results }));
