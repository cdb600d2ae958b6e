/** The hand-written parts held to the generated OpenAPI types (at compile time) and to package.json. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";

import type { components, paths } from "../../src/generated/openapi.js";
import { type DeviceKind, type Provider, type RunStatus, VERSION } from "../../src/index.js";

type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type ListQuery = NonNullable<paths["/api/v1/agent-runs"]["get"]["parameters"]["query"]>;

describe("vocabulary and spec", () => {
  it("names the statuses, providers and device kinds the spec names", () => {
    // Each line fails to compile when the two lists differ.
    const statuses: Same<RunStatus, NonNullable<ListQuery["status"]>> = true;
    const providers: Same<Provider, NonNullable<components["schemas"]["RunCreate"]["provider"]>> = true;
    const kinds: Same<DeviceKind, components["schemas"]["DeviceCreate"]["kind"]> = true;
    assert.deepEqual([statuses, providers, kinds], [true, true, true]);
  });

  it("sends the version package.json gives", () => {
    const pkg = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as {
      version: string;
    };
    assert.equal(VERSION, pkg.version);
  });
});
