/**
 * TypeScript SDK of the agentruns API.
 *
 *     import { Agentruns } from "agentruns";
 *     const client = new Agentruns({ apiKey, baseUrl });
 *     const run = await client.agentRuns.run({ prompt: "Fix the tests", sandbox_id: "box-1" });
 */
export { Agentruns, DEFAULT_BASE_URL, type ClientOptions } from "./client.js";
export type { AgentRuns, CreateOptions, EventsOptions, RequestOptions, RunOptions, WaitOptions } from "./runs.js";
export type { Devices } from "./devices.js";
export type { RunList } from "./pagination.js";
export type { StreamOptions, Transport } from "./stream.js";
export {
  AgentrunsError,
  AuthenticationError,
  BadRequestError,
  ConflictError,
  ConnectionError,
  NotFoundError,
  PermissionDeniedError,
  RateLimitError,
  ServerError,
  ValidationError,
  WaitTimeoutError,
  type AgentrunsErrorInit,
} from "./errors.js";
export type {
  AgentRun,
  AgentRunSummary,
  Device,
  DeviceCreateParams,
  DeviceTestResult,
  DeviceUpdateParams,
  NoteEvent,
  OutputEvent,
  RunCreateParams,
  RunError,
  RunEvent,
  RunListParams,
  RunPage,
  StatusEvent,
  Timestamp,
} from "./types.js";
export {
  DEVICE_KINDS,
  EVENT_TYPES,
  PROVIDERS,
  RUN_STATUSES,
  TERMINAL_STATUSES,
  isTerminal,
  type DeviceKind,
  type EventType,
  type Provider,
  type RunStatus,
} from "./vocabulary.js";
export type { components as OpenApiComponents, paths as OpenApiPaths } from "./generated/openapi.js";
export { VERSION } from "./version.js";
export {
  DEFAULT_WEBHOOK_TOLERANCE,
  WEBHOOK_EVENT_ID_HEADER,
  WEBHOOK_SIGNATURE_HEADER,
  WebhookVerificationError,
  signWebhook,
  verifyWebhook,
  type VerifyWebhookOptions,
  type WebhookEvent,
  type WebhookVerificationErrorCode,
} from "./webhooks.js";
