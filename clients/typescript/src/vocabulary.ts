/**
 * The words the API speaks: run statuses, event types, providers, device kinds.
 * Mirrors agentruns/vocabulary.py: tests/test_sdk_typescript.py holds the two equal, and
 * test/unit/spec-drift.test.ts holds these lists to the generated OpenAPI types.
 */

/** queued -> running -> succeeded | failed | canceled; queued -> canceled. */
export const RUN_STATUSES = ["queued", "running", "succeeded", "failed", "canceled"] as const;
/** A run's status. */
export type RunStatus = (typeof RUN_STATUSES)[number];

/** The statuses a run never leaves. */
export const TERMINAL_STATUSES: ReadonlySet<string> = new Set<RunStatus>(["succeeded", "failed", "canceled"]);

/** Is `status` one a run never leaves (succeeded, failed, canceled)? */
export function isTerminal(status: string): boolean {
  return TERMINAL_STATUSES.has(status);
}

/** A run's event log: status changes, output chunks, and notes from the service. */
export const EVENT_TYPES = ["status", "stdout", "stderr", "note"] as const;
/** The type of a run event. */
export type EventType = (typeof EVENT_TYPES)[number];

/** The API's provider strings; `claude` is an alias of `claude-code`. */
export const PROVIDERS = ["claude-code", "claude", "codex", "osa", "pi", "hermes", "custom"] as const;
/** The coding-agent CLI a run uses (`custom` runs the given `command`). */
export type Provider = (typeof PROVIDERS)[number];

/** Device kinds: a run targets a sandbox or a computer. */
export const DEVICE_KINDS = ["sandbox", "computer"] as const;
/** A device's kind. */
export type DeviceKind = (typeof DEVICE_KINDS)[number];
