// The NATS CLI recipes of docs/nats-tools.md, run with the npm `nats` client as a stand-in for the Go `nats` CLI.
//
//   node tests/interop/nats_recipes.mjs [connection flags] micro ls nmc-node
//   node tests/interop/nats_recipes.mjs [connection flags] micro info nmc-node <id>
//   node tests/interop/nats_recipes.mjs [connection flags] micro stats nmc-node <id>
//   node tests/interop/nats_recipes.mjs [connection flags] req <subject> <body>
//
// Connection flags, named like the Go CLI's: -s/--server URL, --tlscert FILE, --tlskey FILE, --tlsca FILE,
// --inbox-prefix PREFIX (a broker configured by nmc lets a user read replies only on _INBOX.<its name>).
//
// `micro ...` prints one JSON document (ls: an array; info, stats: the node's response); `req` prints the reply
// body exactly as received, as `nats req` does. Exits non-zero with a message on stderr on any error
// (connection refused, no node with that id, no responders, a timeout).
import { connect } from "nats";

function parse(argv) {
  const opts = { servers: "nats://127.0.0.1:4222", tls: undefined, inboxPrefix: undefined };
  const rest = [];
  const value = (i) => {
    if (i + 1 >= argv.length) throw new Error(`${argv[i]} needs a value`);
    return argv[i + 1];
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const tlsKey = { "--tlscert": "certFile", "--tlskey": "keyFile", "--tlsca": "caFile" }[arg];
    if (arg === "-s" || arg === "--server") {
      opts.servers = value(i++);
    } else if (tlsKey) {
      opts.tls = { ...(opts.tls ?? {}), [tlsKey]: value(i++) };
    } else if (arg === "--inbox-prefix") {
      opts.inboxPrefix = value(i++);
    } else {
      rest.push(arg);
    }
  }
  return { opts, rest };
}

async function all(iterable) {
  const out = [];
  // The services client's iterators end by themselves shortly after the last reply.
  for await (const reply of await iterable) {
    out.push(reply);
  }
  return out;
}

async function one(iterable, what) {
  const replies = await all(iterable);
  if (replies.length === 0) throw new Error(`no ${what}`);
  return replies[0];
}

async function run(nc, rest) {
  const [verb, sub, name, id] = rest;
  if (verb === "micro") {
    const svc = nc.services.client();
    if (sub === "ls") {
      // `nats micro ls nmc-node`: every instance with its name, version, id and description.
      const infos = await all(svc.info(name));
      return JSON.stringify(infos.map((i) => ({
        name: i.name, version: i.version, id: i.id, description: i.description, metadata: i.metadata,
      })));
    }
    if (sub === "info" && id) return JSON.stringify(await one(svc.info(name, id), `${name} instance ${id}`));
    if (sub === "stats" && id) return JSON.stringify(await one(svc.stats(name, id), `${name} instance ${id}`));
  }
  if (verb === "req" && rest.length === 3) {
    // `nats req SUBJECT BODY`: one request, no headers, print the reply's body.
    const msg = await nc.request(rest[1], new TextEncoder().encode(rest[2]), { timeout: 5000 });
    return new TextDecoder().decode(msg.data);
  }
  throw new Error(`usage: micro ls NAME | micro info NAME ID | micro stats NAME ID | req SUBJECT BODY (got ${rest.join(" ")})`);
}

async function main() {
  const { opts, rest } = parse(process.argv.slice(2));
  const nc = await connect({ ...opts, timeout: 5000, reconnect: false, name: "nats-recipes" });
  try {
    process.stdout.write((await run(nc, rest)) + "\n");
  } finally {
    await nc.close();
  }
}

// exitCode rather than exit(): let stdout drain before the process ends.
main().catch((err) => {
  process.stderr.write(`nats_recipes: ${err && err.message ? err.message : err}\n`);
  process.exitCode = 1;
});
