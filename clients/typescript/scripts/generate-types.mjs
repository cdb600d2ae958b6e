#!/usr/bin/env node
// Regenerates src/generated/openapi.ts from the server's OpenAPI spec with openapi-typescript.
//   node scripts/generate-types.mjs [SPEC] [OUT]
// SPEC is a file or URL (default: $AGENTRUNS_API_URL/api/v1/openapi.json, else the local dev server);
// OUT defaults to src/generated/openapi.ts. The flags live here once, so the staleness test
// (tests/test_sdk_typescript.py) generates exactly as a developer does.
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const api = (process.env.AGENTRUNS_API_URL ?? "http://127.0.0.1:8000").replace(/\/+$/, "").replace(/\/api\/v1$/, "");
const spec = process.argv[2] ?? `${api}/api/v1/openapi.json`;
const out = process.argv[3] ?? join(root, "src", "generated", "openapi.ts");
// --default-non-nullable false: a field with a server default (provider, wait, driver) stays optional
// in request bodies instead of becoming required.
const flags = ["--default-non-nullable", "false"];
const cli = join(root, "node_modules", "openapi-typescript", "bin", "cli.js");
const result = spawnSync(process.execPath, [cli, spec, ...flags, "--output", out], { stdio: "inherit" });
process.exit(result.status ?? 1);
