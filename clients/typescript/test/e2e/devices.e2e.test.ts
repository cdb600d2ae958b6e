/** Device CRUD and a real connection test over ssh. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { NotFoundError } from "../../src/index.js";
import { batchId, live, liveClient } from "./live-env.js";

describe("devices", () => {
  it("creates, reads, lists, updates, tests and deletes an ssh device", async () => {
    const client = liveClient();
    const id = `ts-${batchId()}`;
    const created = await client.devices.create({
      id,
      kind: "computer",
      driver: "ssh",
      ...live.ssh,
      labels: { team: "ts" },
    });
    assert.equal(created.id, id);
    assert.equal(created.has_private_key, true);
    assert.equal("private_key" in created, false); // secrets are write-only
    assert.deepEqual((await client.devices.get(id)).labels, { team: "ts" });
    assert.ok((await client.devices.list()).some((d) => d.id === id));
    assert.equal((await client.devices.update(id, { name: "renamed" })).name, "renamed");
    const test = await client.devices.test(id);
    assert.equal(test.ok, true, JSON.stringify(test));
    assert.equal(test.error, null);
    assert.equal(typeof test.latency_ms, "number");
    await client.devices.delete(id);
    await assert.rejects(client.devices.get(id), NotFoundError);
  });
});
