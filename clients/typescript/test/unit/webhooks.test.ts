/** Webhook signatures: the shared vectors (written with Python's hmac alone), node:crypto's createHmac
 * as a second reference for the Web Crypto HMAC the SDK uses, and a sign/verify round trip. */
import assert from "node:assert/strict";
import { createHmac, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";

import {
  AgentrunsError,
  DEFAULT_WEBHOOK_TOLERANCE,
  WEBHOOK_EVENT_ID_HEADER,
  WEBHOOK_SIGNATURE_HEADER,
  WebhookVerificationError,
  signWebhook,
  verifyWebhook,
  type VerifyWebhookOptions,
  type WebhookEvent,
} from "../../src/index.js";

interface Vector {
  name: string;
  secret: string;
  body: string;
  header: string;
  now: number;
  tolerance: number;
  expect: "ok" | WebhookVerificationError["code"];
}

// build/test/unit/ -> clients/
const VECTORS = JSON.parse(
  readFileSync(new URL("../../../../webhook-signature-vectors.json", import.meta.url), "utf8"),
) as Vector[];

const NOW = 1_700_000_000;
const SECRET = `whsec_${"a".repeat(43)}`;
const EVENT = {
  id: "evt_1",
  type: "run.succeeded",
  created_at: "2023-11-14T22:13:20Z",
  data: { id: "run-1", status: "succeeded", output: "Grüße 🚀" },
};
const BODY = JSON.stringify(EVENT);

/** The code verifyWebhook rejects with, or "ok". */
async function outcome(
  body: string | Uint8Array,
  header: string | readonly string[] | null | undefined,
  secret = SECRET,
  options: VerifyWebhookOptions = { now: NOW },
): Promise<string> {
  try {
    await verifyWebhook(body, header, secret, options);
    return "ok";
  } catch (error) {
    assert.ok(error instanceof WebhookVerificationError, `not a WebhookVerificationError: ${String(error)}`);
    assert.ok(error instanceof AgentrunsError);
    assert.equal(error.name, "WebhookVerificationError");
    assert.ok(error.message.length > 0);
    return error.code;
  }
}

describe("the shared vectors", () => {
  it("cover every outcome", () => {
    const outcomes = new Set(VECTORS.map((v) => v.expect));
    assert.deepEqual(
      [...outcomes].sort(),
      ["malformed_body", "malformed_header", "ok", "signature_mismatch", "timestamp_outside_tolerance"],
    );
  });

  for (const v of VECTORS) {
    it(v.name, async () => {
      assert.equal(await outcome(v.body, v.header, v.secret, { now: v.now, tolerance: v.tolerance }), v.expect);
      const bytes = new TextEncoder().encode(v.body);
      assert.equal(await outcome(bytes, v.header, v.secret, { now: v.now, tolerance: v.tolerance }), v.expect);
      if (v.expect === "ok") {
        const event = await verifyWebhook(bytes, v.header, v.secret, { now: v.now, tolerance: v.tolerance });
        assert.deepEqual(event, JSON.parse(v.body));
      }
    });
  }

  it("are reproduced by signWebhook where it could have written them", async () => {
    const canonical = VECTORS.filter((v) => v.expect === "ok" && /^t=[1-9]\d*,v1=[0-9a-f]{64}$/.test(v.header));
    assert.ok(canonical.length >= 4);
    for (const v of canonical) {
      const t = Number(v.header.slice(2, v.header.indexOf(",")));
      assert.equal(await signWebhook(v.body, v.secret, t), v.header, v.name);
    }
  });
});

describe("the SDK's HMAC-SHA256 (Web Crypto)", () => {
  it("agrees with node:crypto across padding boundaries, key lengths and a large body", async () => {
    const bodyLengths = [0, 1, 54, 55, 56, 57, 63, 64, 65, 111, 119, 120, 128, 1000, 300_000];
    const secrets = ["k", SECRET, "x".repeat(64), "y".repeat(65), "ü".repeat(40), randomBytes(150).toString("hex")];
    for (const length of bodyLengths) {
      for (const secret of secrets) {
        const body = randomBytes(length);
        const t = 1_600_000_000 + length;
        const reference = createHmac("sha256", secret).update(`${t}.`).update(body).digest("hex");
        const label = `body ${length}, secret ${secret.length}`;
        const header = `t=${t},v1=${reference}`;
        assert.equal(await signWebhook(body, secret, t), header, label);
        // Random bytes are no event: malformed_body, checked last, means the signature was accepted.
        assert.equal(await outcome(body, header, secret, { now: t }), "malformed_body", label);
      }
    }
  });
});

describe("signWebhook and verifyWebhook", () => {
  it("round-trip an event, from a string or bytes", async () => {
    const header = await signWebhook(BODY, SECRET, NOW);
    assert.match(header, /^t=1700000000,v1=[0-9a-f]{64}$/);
    assert.equal(await signWebhook(new TextEncoder().encode(BODY), SECRET, NOW), header);
    const event: WebhookEvent = await verifyWebhook(BODY, header, SECRET, { now: NOW });
    assert.deepEqual(event, EVENT);
    assert.deepEqual(await verifyWebhook(Buffer.from(BODY), header, SECRET, { now: NOW }), EVENT);
  });

  it("return promises, and reject rather than throw", async () => {
    const header = await signWebhook(BODY, SECRET, NOW);
    const verified = verifyWebhook(BODY, header, SECRET, { now: NOW });
    assert.ok(verified instanceof Promise);
    assert.deepEqual(await verified, EVENT);
    const refused = verifyWebhook(BODY, "nonsense", SECRET, { now: NOW });
    assert.ok(refused instanceof Promise);
    await assert.rejects(refused, WebhookVerificationError);
    assert.ok(signWebhook(BODY, SECRET, NOW) instanceof Promise);
  });

  it("verify and parse the bytes as they were when called", async () => {
    const header = await signWebhook(BODY, SECRET, NOW);
    const bytes = new TextEncoder().encode(BODY);
    const pending = verifyWebhook(bytes, header, SECRET, { now: NOW });
    bytes.fill(0x20); // a caller reusing its buffer before the promise settles
    assert.deepEqual(await pending, EVENT);
  });

  it("use the clock by default", async () => {
    const now = Math.floor(Date.now() / 1000);
    assert.deepEqual(await verifyWebhook(BODY, await signWebhook(BODY, SECRET, now), SECRET), EVENT);
    const stale = await signWebhook(BODY, SECRET, now - 3600);
    assert.equal(await outcome(BODY, stale, SECRET, {}), "timestamp_outside_tolerance");
  });

  it("sign once per secret during a rotation, and either secret verifies", async () => {
    const header = await signWebhook(BODY, ["whsec_new", "whsec_old"], NOW);
    const [t, first, second] = header.split(",");
    assert.equal(`${t},${first}`, await signWebhook(BODY, "whsec_new", NOW));
    assert.equal(`${t},${second}`, await signWebhook(BODY, "whsec_old", NOW));
    assert.notEqual(first, second);
    assert.equal(await outcome(BODY, header, "whsec_new"), "ok");
    assert.equal(await outcome(BODY, header, "whsec_old"), "ok");
    assert.equal(await outcome(BODY, header, "whsec_other"), "signature_mismatch");
  });

  it("refuse a tampered body and a wrong secret", async () => {
    const header = await signWebhook(BODY, SECRET, NOW);
    assert.equal(await outcome(BODY.replace("succeeded", "failed"), header), "signature_mismatch");
    assert.equal(await outcome(`${BODY}\n`, header), "signature_mismatch");
    assert.equal(await outcome(BODY, header, `${SECRET}x`), "signature_mismatch");
  });

  it("take a v1 that is not 64 lowercase hex digits as a mismatch, not an error", async () => {
    const header = await signWebhook(BODY, SECRET, NOW);
    const [t, v1] = header.split(",") as [string, string];
    const hex = v1.slice(3);
    const bad = [
      "", "0", "zz".repeat(32), `${hex.slice(0, 63)}g`, `${hex.slice(0, 63)}`, `${hex}0`, `${hex}00`,
      hex.slice(0, 62), hex.toUpperCase(), `0x${hex.slice(2)}`, `${hex.slice(0, 62)}é`,
      `${hex.slice(0, 31)} ${hex.slice(32)}`, Buffer.from(hex, "hex").toString("base64"), "-".repeat(64),
      "00".repeat(32),
    ];
    for (const value of bad) {
      assert.equal(await outcome(BODY, `${t},v1=${value}`), "signature_mismatch", JSON.stringify(value));
      // ... and one among them does not keep a good one from matching, wherever it stands.
      assert.equal(await outcome(BODY, `${t},v1=${value},${v1}`), "ok", JSON.stringify(value));
      assert.equal(await outcome(BODY, `${t},${v1},v1=${value}`), "ok", JSON.stringify(value));
    }
  });

  it("hold the timestamp to the tolerance, either way", async () => {
    const at = async (t: number, tolerance?: number): Promise<string> =>
      outcome(BODY, await signWebhook(BODY, SECRET, t), SECRET, { now: NOW, tolerance });
    assert.equal(DEFAULT_WEBHOOK_TOLERANCE, 300);
    const outside = "timestamp_outside_tolerance";
    assert.deepEqual(
      [
        await at(NOW - 300), await at(NOW + 300), await at(NOW - 301), await at(NOW + 301),
        await at(NOW - 600, 900), await at(NOW - 61, 60),
      ],
      ["ok", "ok", outside, outside, "ok", outside],
    );
    const header = await signWebhook(BODY, SECRET, NOW);
    assert.equal(await outcome(BODY, header, SECRET, { now: NOW + 300.5 }), "timestamp_outside_tolerance");
    // Milliseconds for `now` are a mistake this makes loud.
    assert.equal(await outcome(BODY, header, SECRET, { now: NOW * 1000 }), "timestamp_outside_tolerance");
  });

  it("refuse malformed headers, missing ones included", async () => {
    const v1 = (await signWebhook(BODY, SECRET, NOW)).split(",")[1]!;
    const headers = [
      undefined, null, "", " \t", [], [""], v1, `t=now,${v1}`, `t=1e9,${v1}`, `t=0x10,${v1}`, `t=${NOW}.0,${v1}`,
      `t=-${NOW},${v1}`, `t=,${v1}`, `t=${NOW},t=${NOW},${v1}`, `t=${NOW}`, `t=${NOW},v0=abc`, `T=${NOW},${v1}`,
    ];
    for (const header of headers) {
      assert.equal(await outcome(BODY, header), "malformed_header", JSON.stringify(header));
    }
  });

  it("ignore unknown schemes and whitespace, and join a header sent on several lines", async () => {
    const [t, v1] = (await signWebhook(BODY, SECRET, NOW)).split(",") as [string, string];
    assert.equal(await outcome(BODY, `${t},v0=abc,${v1},v2=x`), "ok");
    assert.equal(await outcome(BODY, ` ${t} ,\t${v1.replace("=", " = ")} ,,junk`), "ok");
    assert.equal(await outcome(BODY, [t, v1]), "ok");
  });

  it("refuse a signed body that is not an event", async () => {
    const bodies: (string | Uint8Array)[] = [
      "", "nope", "[1]", "null", '"evt_1"', '{"id":"evt_1"}', '{"id":1,"type":"x"}',
      '{"id":"e","type":"x","n":NaN}', `\ufeff${BODY}`,
      new Uint8Array([0xef, 0xbb, 0xbf, ...new TextEncoder().encode(BODY)]), // a UTF-8 byte order mark
      new Uint8Array([0x7b, 0x22, 0xff, 0x22, 0x7d]), // {"\xff"}: not UTF-8
    ];
    for (const body of bodies) {
      assert.equal(await outcome(body, await signWebhook(body, SECRET, NOW)), "malformed_body", String(body));
    }
  });

  it("treat a missing secret or a bad timestamp as a programming error", async () => {
    const header = await signWebhook(BODY, SECRET, NOW);
    await assert.rejects(verifyWebhook(BODY, header, "", { now: NOW }), TypeError);
    await assert.rejects(signWebhook(BODY, [], NOW), TypeError);
    await assert.rejects(signWebhook(BODY, [""], NOW), TypeError);
    await assert.rejects(signWebhook(BODY, SECRET, NOW + 0.5), TypeError);
    await assert.rejects(signWebhook(BODY, SECRET, Date.now() * 1e6), TypeError);
  });

  it("say what they need in a runtime without Web Crypto, whatever the request", async () => {
    const header = await signWebhook(BODY, SECRET, NOW);
    const descriptor = Object.getOwnPropertyDescriptor(globalThis, "crypto");
    assert.ok(descriptor?.configurable, "globalThis.crypto cannot be hidden here");
    const requirement = (name: string) => (error: unknown): boolean => {
      assert.ok(error instanceof Error);
      assert.ok(!(error instanceof WebhookVerificationError), "a configuration error, not a refused event");
      assert.match(error.message, new RegExp(`^${name} needs the Web Crypto API`));
      assert.match(error.message, /Node >= 19/);
      assert.match(error.message, /--experimental-global-webcrypto/);
      return true;
    };
    for (const crypto of [undefined, {}]) {
      Object.defineProperty(globalThis, "crypto", { value: crypto, configurable: true, writable: true });
      try {
        await assert.rejects(verifyWebhook(BODY, header, SECRET, { now: NOW }), requirement("verifyWebhook"));
        await assert.rejects(verifyWebhook(BODY, "nonsense", SECRET, { now: NOW }), requirement("verifyWebhook"));
        await assert.rejects(signWebhook(BODY, SECRET, NOW), requirement("signWebhook"));
      } finally {
        Object.defineProperty(globalThis, "crypto", descriptor);
      }
    }
    assert.equal(await outcome(BODY, header), "ok");
  });

  it("name the headers", () => {
    assert.equal(WEBHOOK_SIGNATURE_HEADER, "Agentruns-Signature");
    assert.equal(WEBHOOK_EVENT_ID_HEADER, "Agentruns-Event-Id");
  });
});
