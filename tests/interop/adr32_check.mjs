// Independent ADR-32 check: ask the npm `nats` services client what `nmc-node` services it can see.
//
//   node tests/interop/adr32_check.mjs nats://127.0.0.1:4222
//
// Prints ONE JSON object on stdout:
//   {"ping": [{id, name, version, metadata}...],
//    "info": [{id, name, description, endpoints: [{name, subject}...]}...],
//    "stats": [{id, name, started, endpoints: [{name, num_requests, num_errors}...]}...]}
// and exits non-zero (message on stderr) on any error: connection, a reply the client cannot parse,
// or a reply that is not a service response.
import { connect } from "nats";

const SERVICE = "nmc-node";

async function collect(iterable, pick) {
  const out = [];
  // The client's iterators end by themselves (jitter timer after the last reply, at most maxWait).
  for await (const reply of await iterable) {
    if (reply === null || typeof reply !== "object") {
      throw new Error(`not a service response: ${JSON.stringify(reply)}`);
    }
    out.push(pick(reply));
  }
  return out;
}

async function main() {
  const url = process.argv[2];
  if (!url) {
    throw new Error("usage: node adr32_check.mjs <nats-url>");
  }
  const nc = await connect({ servers: url, timeout: 5000, reconnect: false, name: "adr32-check" });
  try {
    const svc = nc.services.client();
    const ping = await collect(svc.ping(SERVICE), (p) => ({
      type: p.type, id: p.id, name: p.name, version: p.version, metadata: p.metadata,
    }));
    const info = await collect(svc.info(SERVICE), (i) => ({
      type: i.type, id: i.id, name: i.name, description: i.description,
      endpoints: (i.endpoints ?? []).map((e) => ({ name: e.name, subject: e.subject })),
    }));
    const stats = await collect(svc.stats(SERVICE), (s) => ({
      type: s.type, id: s.id, name: s.name, started: s.started,
      endpoints: (s.endpoints ?? []).map((e) => ({
        name: e.name, num_requests: e.num_requests, num_errors: e.num_errors,
      })),
    }));
    process.stdout.write(JSON.stringify({ ping, info, stats }) + "\n");
  } finally {
    await nc.close();
  }
}

// exitCode rather than exit(): let stdout drain before the process ends.
main().catch((err) => {
  process.stderr.write(`adr32_check: ${err && err.stack ? err.stack : err}\n`);
  process.exitCode = 1;
});
