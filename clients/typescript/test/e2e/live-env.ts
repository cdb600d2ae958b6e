/**
 * What the end-to-end tests get from tests/test_sdk_typescript.py: a live API (gunicorn, a Celery
 * worker and beat), a key of a fresh tenant, and an ssh device on a real sshd.
 */
import { randomUUID } from "node:crypto";

import { Agentruns, type ClientOptions, type RunCreateParams } from "../../src/index.js";

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests through tests/test_sdk_typescript.py`);
  return value;
}

/** The ssh login of the test sshd, for registering more devices. */
export interface SshLogin {
  host: string;
  port: number;
  username: string;
  private_key: string;
  host_key: string;
}

export const live = {
  url: required("AGENTRUNS_API_URL"),
  key: required("AGENTRUNS_API_KEY"),
  /** An ssh computer registered for the tenant, its default cwd `workdir`. */
  device: required("AGENTRUNS_TEST_DEVICE"),
  workdir: required("AGENTRUNS_TEST_WORKDIR"),
  ssh: JSON.parse(required("AGENTRUNS_TEST_SSH")) as SshLogin,
};

/** A request as the SDK handed it to fetch. */
export interface SentRequest {
  method: string;
  url: string;
  headers: Headers;
}

/** A fetch that records what the SDK sends, then sends it. */
export function recordingFetch(): { fetch: typeof fetch; sent: SentRequest[] } {
  const sent: SentRequest[] = [];
  const recording: typeof fetch = (input, init) => {
    sent.push({ method: init?.method ?? "GET", url: String(input), headers: new Headers(init?.headers) });
    return fetch(input, init);
  };
  return { fetch: recording, sent };
}

/** A client of the live API (fast retries, so fault tests stay quick). */
export function liveClient(options: ClientOptions = {}): Agentruns {
  return new Agentruns({ baseUrl: live.url, apiKey: live.key, backoffBaseMs: 50, ...options });
}

/** Create params for a `custom` run of `command` on the test device. */
export function custom(command: string, extra: Partial<RunCreateParams> = {}): RunCreateParams {
  return { prompt: "p", computer_id: live.device, provider: "custom", command, ...extra };
}

/** A fresh label for metadata filters. */
export function batchId(): string {
  return randomUUID().slice(0, 8);
}

/** Let the device take several runs at once, so the test files do not queue behind each other. */
export async function allowConcurrentRuns(): Promise<void> {
  await liveClient().devices.update(live.device, { max_concurrent_runs: 8 });
}
