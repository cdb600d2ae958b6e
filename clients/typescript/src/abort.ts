/** AbortSignal helpers that work on Node 18 (no AbortSignal.any) and in browsers. */

/** A signal that aborts when any of `signals` does, and `dispose` to stop listening to them. */
export interface LinkedSignal {
  readonly signal: AbortSignal;
  /** Abort the linked signal itself (e.g. to close a connection). */
  abort(reason?: unknown): void;
  /** Stop listening to the source signals (call when the operation is over, or listeners pile up). */
  dispose(): void;
}

/** Link `signals` (undefined ones are skipped) into one controller's signal. */
export function linkSignals(...signals: (AbortSignal | undefined)[]): LinkedSignal {
  const controller = new AbortController();
  const cleanups: (() => void)[] = [];
  for (const source of signals) {
    if (source === undefined) continue;
    if (source.aborted) {
      controller.abort(source.reason);
      break;
    }
    const onAbort = () => controller.abort(source.reason);
    source.addEventListener("abort", onAbort, { once: true });
    cleanups.push(() => source.removeEventListener("abort", onAbort));
  }
  return {
    signal: controller.signal,
    abort: (reason?: unknown) => controller.abort(reason),
    dispose: () => cleanups.splice(0).forEach((cleanup) => cleanup()),
  };
}

/** Resolve after `ms`; reject with the signal's reason as soon as it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Throw the signal's reason if it has aborted. */
export function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw signal.reason;
}
