/**
 * The SDK's request and response types: the generated OpenAPI types (generated/openapi.ts, from the
 * server's /api/v1/openapi.json), named for the SDK. The spec lists every response field as required
 * (null when unset is `nullable`), gives statuses, providers, kinds and event types as enums and
 * timestamps as date-time strings, so most of these are the generated schema as is. Each interface
 * extends its generated schema, so a spec change that contradicts a narrowing here stops the build;
 * test/unit/spec-drift.test.ts holds the vocabulary to the spec's enums.
 */
import type { components, paths } from "./generated/openapi.js";
import type { RunStatus } from "./vocabulary.js";

type Schemas = components["schemas"];
// Named, because an interface extends only a named type.
type RunCreateSchema = Schemas["RunCreate"];
type RunErrorSchema = Schemas["RunError"];
type RunSummarySchema = Schemas["RunSummary"];
type RunOutSchema = Schemas["RunOut"];
type RunListEnvelopeSchema = Schemas["RunListEnvelope"];
type DeviceCreateSchema = Schemas["DeviceCreate"];
type DevicePatchSchema = Schemas["DevicePatch"];
type DeviceOutSchema = Schemas["DeviceOut"];
type DeviceTestSchema = Schemas["DeviceTest"];

/** An RFC 3339 timestamp in UTC, e.g. `2026-01-01T12:00:00.123456Z`. */
export type Timestamp = string;

/** The body of a create: POST /api/v1/agent-runs. Give `target_id` (with `target_kind`),
 * `sandbox_id` or `computer_id`. `wait`: `true` (60 s) or seconds, the server holds its answer until
 * the run ends, up to that long; `env`: extra environment variables for the command on the device. */
export interface RunCreateParams extends RunCreateSchema {}

/** Why a run failed or was canceled. */
export interface RunError extends RunErrorSchema {}

/** A run as listed (GET /api/v1/agent-runs). */
export interface AgentRunSummary extends RunSummarySchema {}

/** A whole run (GET /api/v1/agent-runs/{id} and every other run answer). */
export interface AgentRun extends RunOutSchema {}

type ListQuery = NonNullable<paths["/api/v1/agent-runs"]["get"]["parameters"]["query"]>;

/** Filters of GET /api/v1/agent-runs (newest first). */
export interface RunListParams extends Omit<ListQuery, "created_after" | "created_before" | "metadata"> {
  created_after?: Timestamp | Date;
  created_before?: Timestamp | Date;
  /** Exact matches on metadata values, sent as `metadata[KEY]=VALUE` (a number or boolean also
   * matches that JSON value). */
  metadata?: Record<string, string | number | boolean>;
}

/** One page of runs; pass `next_cursor` as `cursor` for the next (null on the last page). */
export interface RunPage extends RunListEnvelopeSchema {
  data: AgentRunSummary[];
}

interface EventFields extends Omit<Schemas["EventOut"], "at"> {
  /** When it happened; null only for an event rebuilt from bare SSE fields. */
  at: Timestamp | null;
}

/** A status change: `data.status`, and `data.error` when the run failed or was canceled. */
export interface StatusEvent extends EventFields {
  type: "status";
  readonly data: { status: RunStatus; error?: RunError | null; [key: string]: unknown };
}

/** A chunk of the command's output. */
export interface OutputEvent extends EventFields {
  type: "stdout" | "stderr";
  readonly data: string;
}

/** A note from the service, e.g. that live output was capped. */
export interface NoteEvent extends EventFields {
  type: "note";
  readonly data: { note: string; [key: string]: unknown };
}

/** One entry of a run's ordered event log; `seq` orders them (it is global, so not contiguous).
 * The spec gives `data` as a string or an object; here each `type` gets its own. */
export type RunEvent = StatusEvent | OutputEvent | NoteEvent;

/** The body of POST /api/v1/devices (secrets are write-only: `env` is read back as `env_names`). */
export interface DeviceCreateParams extends DeviceCreateSchema {}

/** The body of PATCH /api/v1/devices/{id}: only the fields to change; a secret set to null is removed. */
export interface DeviceUpdateParams extends DevicePatchSchema {}

/** A registered sandbox or computer (its secrets are never returned). */
export interface Device extends DeviceOutSchema {}

/** What POST /api/v1/devices/{id}/test found. */
export interface DeviceTestResult extends DeviceTestSchema {}
