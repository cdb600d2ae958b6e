/** `client.devices`: the tenant's sandboxes and computers (mirrors DeviceFlows in
 * agentruns/_sdk_resources.py). */
import type { Http } from "./http.js";
import type { RequestOptions } from "./runs.js";
import type { Device, DeviceCreateParams, DeviceTestResult, DeviceUpdateParams } from "./types.js";

const DEVICES = "/api/v1/devices";
/** A device test connects to the device: allow it this much beyond the client's timeout. */
const DEVICE_TEST_EXTRA_MS = 30_000;

function devicePath(deviceId: string, tail = ""): string {
  return `${DEVICES}/${encodeURIComponent(deviceId)}${tail}`;
}

/** Without its null and undefined fields: absent fields take the server's defaults. */
function withoutNulls<T extends object>(fields: T): Partial<T> {
  return Object.fromEntries(Object.entries(fields).filter(([, value]) => value != null)) as Partial<T>;
}

/** The devices of the client's tenant. Writes are resent only when they surely never arrived. */
export class Devices {
  /** @internal */
  constructor(private readonly http: Http) {}

  /** Register a device (id, kind, driver, host, port, username, private_key, host_key, ...). */
  async create(params: DeviceCreateParams, options: RequestOptions = {}): Promise<Device> {
    return this.http.data<Device>({
      method: "POST",
      path: DEVICES,
      body: withoutNulls(params),
      retry: "safe",
      signal: options.signal,
    });
  }

  /** All devices of the tenant. */
  async list(options: RequestOptions = {}): Promise<Device[]> {
    return this.http.data<Device[]>({ method: "GET", path: DEVICES, retry: "always", signal: options.signal });
  }

  /** One device (secrets are never returned: see `has_private_key`, `env_names`). */
  async get(deviceId: string, options: RequestOptions = {}): Promise<Device> {
    return this.http.data<Device>({
      method: "GET",
      path: devicePath(deviceId),
      retry: "always",
      signal: options.signal,
    });
  }

  /** Change some fields; a secret given as null is removed (so nulls are sent). */
  async update(deviceId: string, params: DeviceUpdateParams, options: RequestOptions = {}): Promise<Device> {
    return this.http.data<Device>({
      method: "PATCH",
      path: devicePath(deviceId),
      body: params,
      retry: "safe",
      signal: options.signal,
    });
  }

  /** Delete a device with no runs in flight (ConflictError otherwise). */
  async delete(deviceId: string, options: RequestOptions = {}): Promise<void> {
    await this.http.data<undefined>({
      method: "DELETE",
      path: devicePath(deviceId),
      retry: "safe",
      signal: options.signal,
    });
  }

  /** Connect and run `true`: `{ok, latency_ms, host_key, error}`. */
  async test(deviceId: string, options: RequestOptions = {}): Promise<DeviceTestResult> {
    return this.http.data<DeviceTestResult>({
      method: "POST",
      path: devicePath(deviceId, "/test"),
      timeoutMs: this.http.config.timeoutMs + DEVICE_TEST_EXTRA_MS,
      retry: "safe",
      signal: options.signal,
    });
  }
}
