// Appends events to an Emmett PostgreSQL event store with Emmett's own package.
//
// Usage: node writer.mjs <connection string>
// Standard input: one JSON command per line.
//   {"stream": "cart-1", "events": [{"type": "CartOpened", "data": {...}, "metadata": {...}}],
//    "expectedVersion": 0, "hold": false}
//       appends to a stream. Appends to different streams run concurrently; appends to one
//       stream run in the order given. With "hold": true the append's transaction stays open
//       until a {"release": "cart-1"} line arrives: an inline projection (Emmett runs those in
//       the appending transaction, before COMMIT) waits for it.
//   {"release": "cart-1"}
// Standard output: one JSON line per event: {"held": stream} when a held append is inside
// its transaction, {"appended": stream, "nextExpectedStreamVersion": n, "lastEventGlobalPosition": p}
// after a commit, and {"done": n} at the end of the input once every append committed.
// Errors go to standard error and the exit code is 1.
import { createInterface } from "node:readline";
import { getPostgreSQLEventStore } from "@event-driven-io/emmett-postgresql";

const connectionString = process.argv[2];
if (!connectionString) {
  console.error("usage: node writer.mjs <postgresql connection string>");
  process.exit(2);
}

const print = (value) =>
  process.stdout.write(JSON.stringify(value, (_, v) => (typeof v === "bigint" ? v.toString() : v)) + "\n");

// Event types of held appends; Emmett runs an inline projection only for the types it handles.
const heldTypes = [];
const heldStreams = new Set();
const holdingProjection = {
  canHandle: heldTypes,
  handle: async (events) => {
    for (const event of events) {
      const stream = event.metadata?.streamName;
      if (heldStreams.has(stream)) {
        heldStreams.delete(stream);
        print({ held: stream });
        await waitForRelease(stream);
      }
    }
  },
};
const store = getPostgreSQLEventStore(connectionString, {
  schema: { autoMigration: "CreateOrUpdate" },
  projections: [{ type: "inline", projection: holdingProjection }],
});
// Create Emmett's schema once, before concurrent appends race to create it.
await store.schema.migrate();

const chains = new Map();
const releases = new Map();
const pending = [];
let failed = false;
let appended = 0;


function waitForRelease(stream) {
  return new Promise((resolve) => {
    const early = releases.get(stream);
    if (early === true) {
      releases.delete(stream);
      resolve();
      return;
    }
    releases.set(stream, resolve);
  });
}

function release(stream) {
  const resolve = releases.get(stream);
  if (typeof resolve === "function") {
    releases.delete(stream);
    resolve();
  } else {
    releases.set(stream, true);
  }
}

async function append(command) {
  const options = {};
  if (command.expectedVersion !== undefined && command.expectedVersion !== null) {
    options.expectedStreamVersion = BigInt(command.expectedVersion);
  }
  if (command.hold) {
    heldStreams.add(command.stream);
    for (const event of command.events) heldTypes.push(event.type);
  }
  const result = await store.appendToStream(command.stream, command.events, options);
  appended += command.events.length;
  print({
    appended: command.stream,
    nextExpectedStreamVersion: result.nextExpectedStreamVersion,
    lastEventGlobalPosition: result.lastEventGlobalPosition,
  });
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const command = JSON.parse(line);
  if (command.release !== undefined) {
    release(command.release);
    continue;
  }
  const previous = chains.get(command.stream) ?? Promise.resolve();
  const next = previous.then(() => append(command));
  const guarded = next.catch((error) => {
    failed = true;
    console.error(`append to ${command.stream} failed: ${error?.message ?? error}`);
  });
  chains.set(command.stream, guarded);
  pending.push(guarded);
}

await Promise.all(pending);
await store.close();
if (failed) process.exit(1);
print({ done: appended });
