import { Agentruns } from "agentruns";

const client = new Agentruns(); // AGENTRUNS_API_URL and AGENTRUNS_API_KEY, or { baseUrl, apiKey }
const run = await client.agentRuns.run(
  { prompt: "Say hello", computer_id: "pc-1", provider: "custom", command: 'echo "hello from $(whoami)"' },
  { timeoutMs: 120_000 }, // resolves when the run has ended: succeeded, failed or canceled
);
console.log(run.status, run.output);
