/** The SDK's entry point: `new Agentruns({ apiKey, baseUrl })`. */
import { Devices } from "./devices.js";
import { Http } from "./http.js";
import { AgentRuns } from "./runs.js";
import { VERSION } from "./version.js";

/** Used when neither `baseUrl` nor AGENTRUNS_API_URL is given: `agentruns dev`'s address. */
export const DEFAULT_BASE_URL = "http://127.0.0.1:8000";

/** How to reach the API and how patiently to talk to it. */
export interface ClientOptions {
  /** An API key (`agentruns keys create`); in Node, AGENTRUNS_API_KEY when omitted. */
  apiKey?: string | undefined;
  /** The server, with or without /api/v1; in Node, AGENTRUNS_API_URL when omitted, else 127.0.0.1:8000. */
  baseUrl?: string | undefined;
  /** Per HTTP attempt (a long-poll adds its wait). Default 30 000 ms. */
  timeoutMs?: number;
  /** Resends after a retryable failure (see the README's "Retries"). Default 3. */
  maxRetries?: number;
  /** First backoff step; it doubles per retry, capped at 8 s, with jitter. Default 500 ms. */
  backoffBaseMs?: number;
  /** The fetch to use (a wrapper for logging, a test double). Default: the global fetch. */
  fetch?: typeof fetch;
  /** Extra headers for every request. */
  headers?: Record<string, string>;
}

/** An environment variable where there is one (Node, Bun, Deno with permission); undefined elsewhere. */
function env(name: string): string | undefined {
  try {
    const process = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process;
    return process?.env?.[name] || undefined;
  } catch {
    return undefined; // e.g. Deno without --allow-env
  }
}

function normalizeBaseUrl(url: string): string {
  // Accept the URL with or without the API prefix: every path carries it.
  const base = url.replace(/\/+$/, "").replace(/\/api\/v1$/, "");
  new URL(base); // a malformed URL fails here, not as a retried "connection error" later
  return base;
}

/** A client of the agentruns API: `client.agentRuns` and `client.devices`. */
export class Agentruns {
  /** Runs: create, run, get, wait, list, page, cancel, events, stream. */
  readonly agentRuns: AgentRuns;
  /** Devices: create, get, list, update, delete, test. */
  readonly devices: Devices;
  /** The API's address, without /api/v1. */
  readonly baseUrl: string;

  constructor(options: ClientOptions = {}) {
    if (options.fetch === undefined && typeof globalThis.fetch !== "function") {
      throw new TypeError("no global fetch: pass options.fetch (Node 18+ has one)");
    }
    this.baseUrl = normalizeBaseUrl(options.baseUrl ?? env("AGENTRUNS_API_URL") ?? DEFAULT_BASE_URL);
    const http = new Http(
      {
        baseUrl: this.baseUrl,
        apiKey: options.apiKey ?? env("AGENTRUNS_API_KEY"),
        timeoutMs: options.timeoutMs ?? 30_000,
        maxRetries: options.maxRetries ?? 3,
        backoffBaseMs: options.backoffBaseMs ?? 500,
        // Called unbound, a browser's fetch throws "Illegal invocation".
        fetch: options.fetch ?? ((input, init) => globalThis.fetch(input, init)),
        headers: options.headers ?? {},
      },
      `agentruns-typescript/${VERSION}`,
    );
    this.agentRuns = new AgentRuns(http);
    this.devices = new Devices(http);
  }
}
