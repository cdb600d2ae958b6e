/**
 * The SDK's request and response types: the generated OpenAPI types (generated/openapi.ts, from the
 * server's /api/v1/openapi.json), narrowed where the spec is looser than what the server sends.
 * Each narrowing interface extends its generated schema, so a spec change that contradicts it stops
 * the build. The spec marks no response field as required (the server always sends them all), leaves
 * timestamps, `cancel_requested` and event `data` untyped, and gives statuses as plain strings.
 */
import type { components, paths } from "./generated/openapi.js";
import type { DeviceKind, Provider, RunStatus } from "./vocabulary.js";

type Schemas = components["schemas"];

/** Every field present: the server sends all of a response schema's fields (null when unset). */
type AsSent<T> = { [K in keyof T]-?: Exclude<T[K], undefined> };

/** An ISO 8601 timestamp in UTC, e.g. `2026-01-01T12:00:00.123456+00:00`. */
export type Timestamp = string;

/** The body of a create: POST /api/v1/agent-runs. Give `target_id` (with `target_kind`),
 * `sandbox_id` or `computer_id`. */
export interface RunCreateParams extends Omit<Schemas["RunCreate"], "wait" | "env"> {
  /** `true` (60 s) or seconds: the server holds its answer until the run ends, up to that long. */
  wait?: boolean | number;
  /** Extra environment variables for the command on the device. */
  env?: Record<string, string>;
}

/** Why a run failed or was canceled. */
export interface RunError extends AsSent<Schemas["RunError"]> {}

/** A run as listed (GET /api/v1/agent-runs). */
export interface AgentRunSummary extends AsSent<Schemas["RunSummary"]> {
  status: RunStatus;
  target_kind: DeviceKind;
  provider: Provider;
  created_at: Timestamp;
  finished_at: Timestamp | null;
}

/** A whole run (GET /api/v1/agent-runs/{id} and every other run answer). */
export interface AgentRun extends AsSent<Schemas["RunOut"]> {
  status: RunStatus;
  target_kind: DeviceKind;
  provider: Provider;
  error: RunError | null;
  readonly cancel_requested: boolean;
  created_at: Timestamp;
  started_at: Timestamp | null;
  finished_at: Timestamp | null;
  updated_at: Timestamp;
}

type ListQuery = NonNullable<paths["/api/v1/agent-runs"]["get"]["parameters"]["query"]>;

/** Filters of GET /api/v1/agent-runs (newest first). */
export interface RunListParams extends Omit<ListQuery, "created_after" | "created_before"> {
  created_after?: Timestamp | Date;
  created_before?: Timestamp | Date;
  /** Exact matches on metadata values, sent as `metadata[KEY]=VALUE`. */
  metadata?: Record<string, string | number | boolean>;
}

/** One page of runs; pass `next_cursor` as `cursor` for the next (null on the last page). */
export interface RunPage {
  data: AgentRunSummary[];
  next_cursor: string | null;
}

interface EventFields extends AsSent<Schemas["EventOut"]> {
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

/** One entry of a run's ordered event log; `seq` orders them (it is global, so not contiguous). */
export type RunEvent = StatusEvent | OutputEvent | NoteEvent;

/** The body of POST /api/v1/devices (secrets are write-only). */
export interface DeviceCreateParams extends Omit<Schemas["DeviceCreate"], "env"> {
  /** Environment variables for every run on the device (write-only: read back as `env_names`). */
  env?: Record<string, string>;
}

/** The body of PATCH /api/v1/devices/{id}: only the fields to change; a secret set to null is removed. */
export interface DeviceUpdateParams extends Omit<Schemas["DevicePatch"], "env"> {
  env?: Record<string, string>;
}

/** A registered sandbox or computer (its secrets are never returned). */
export interface Device extends AsSent<Schemas["DeviceOut"]> {
  kind: DeviceKind;
  driver: "ssh" | "local";
  labels: Record<string, string>;
  created_at: Timestamp;
  updated_at: Timestamp;
}

/** What POST /api/v1/devices/{id}/test found. */
export interface DeviceTestResult extends AsSent<Schemas["DeviceTest"]> {}
