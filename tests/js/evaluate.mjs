// Evaluates GrowthBook payloads with GrowthBook's JavaScript SDK, as an application would
// locally, for many subjects in one process (the tests start one Node per batch, never one
// per subject).
//
// stdin:  {"jobs": [{"payload": <the SDK payload>, "flags": [key, ...],
//                    "subjects": [{"attributes": {...}}, ...],
//                    "sticky": null, or the sticky bucket documents by "attribute||value"}]}
// stdout: {"jobs": [{"results": [[{"value", "source", "in_experiment", "experiment",
//                                  "variant"}, ...per flag], ...per subject],
//                    "attributes": [the attributes as JavaScript read them, ...per subject],
//                    "sticky": the sticky documents after the job}]}
//
// `experiment` is the experiment's key and `variant` the variation's meta key (the SDK's
// `result.key`), both null when the subject is not in an experiment. With `sticky`, the SDK
// buckets stickily, reading and writing those documents (one store for every subject, as
// a sticky bucket service keeps them); subjects are evaluated in order, flags in order.
import { GrowthBookClient } from "@growthbook/growthbook";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const input = JSON.parse(Buffer.concat(chunks).toString("utf8"));

function run(job) {
  const client = new GrowthBookClient({});
  client.initSync({ payload: job.payload, streaming: false });
  const sticky = job.sticky ?? null;
  const results = job.subjects.map((subject) => {
    const user = { attributes: subject.attributes };
    if (sticky !== null) {
      user.stickyBucketAssignmentDocs = sticky; // the SDK writes new documents into it
      user.saveStickyBucketAssignmentDoc = async () => {};
    }
    return job.flags.map((key) => {
      const result = client.evalFeature(key, user);
      const assigned = result.experimentResult?.inExperiment === true;
      return {
        value: result.value === undefined ? null : result.value,
        source: result.source,
        in_experiment: assigned,
        experiment: assigned ? result.experiment.key : null,
        variant: assigned ? result.experimentResult.key : null,
      };
    });
  });
  return { results, attributes: job.subjects.map((s) => s.attributes), sticky };
}

process.stdout.write(JSON.stringify({ jobs: input.jobs.map(run) }));
