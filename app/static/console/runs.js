// The task stream stays live: the first page polls the small JSON feed (/runs/feed with the same
// filters) every POLL_MS, adds new runs on top and updates the status and duration of the others;
// running rows count their duration up every second. Rows are filled with textContent only.
"use strict";
(function () {
  const POLL_MS = 2000;
  const table = document.getElementById("runs");
  const body = document.getElementById("run-rows");
  const template = document.getElementById("run-row-template");
  const empty = document.getElementById("no-runs");
  const indicator = document.getElementById("live-indicator");
  const {duration, timeElement} = window.agentruns;
  let clockSkewMs = Date.parse(table.dataset.now) - Date.now();  // server time minus ours

  function setStatus(row, status) {
    row.dataset.status = status;
    const badge = row.querySelector("[data-status-badge]");
    badge.className = `status status-${status}`;
    badge.textContent = status;
  }

  function cell(row, name) { return row.querySelector(`[data-cell="${name}"]`); }

  function update(row, run) {
    if (row.dataset.status !== run.status) setStatus(row, run.status);
    row.dataset.started = run.started_at || "";
    row.dataset.finished = run.finished_at || "";
    cell(row, "request_id").textContent = run.request_id || "—";
    if (run.status !== "running") cell(row, "duration").textContent = run.duration;
  }

  function newRow(run) {
    const row = template.content.firstElementChild.cloneNode(true);
    row.dataset.runId = run.id;
    const link = cell(row, "title");
    link.href = `/runs/${encodeURIComponent(run.id)}`;
    link.textContent = run.title || "(empty prompt)";
    cell(row, "short_id").textContent = run.id.slice(0, 8);
    cell(row, "short_id").title = run.id;
    cell(row, "provider").textContent = run.provider;
    cell(row, "target_kind").textContent = run.target_kind;
    cell(row, "target_id").textContent = run.target_id;
    row.querySelector('[data-label="Created"]').replaceChildren(timeElement(run.created_at));
    setStatus(row, run.status);
    update(row, run);
    row.classList.add("row-new");
    return row;
  }

  function apply(runs) {
    const existing = new Map([...body.querySelectorAll("tr[data-run-id]")].map((r) => [r.dataset.runId, r]));
    // The feed is newest first: walk it from the oldest so that each new run goes on top.
    for (const run of [...runs].reverse()) {
      const row = existing.get(run.id);
      if (row) update(row, run);
      else body.prepend(newRow(run));
    }
    empty.hidden = body.rows.length > 0;
  }

  function tick() {
    const now = Date.now() + clockSkewMs;
    for (const row of body.querySelectorAll('tr[data-status="running"]')) {
      if (row.dataset.started) cell(row, "duration").textContent = duration((now - Date.parse(row.dataset.started)) / 1000);
    }
  }

  async function poll() {
    try {
      const resp = await fetch(table.dataset.feed, {headers: {Accept: "application/json"}, credentials: "same-origin"});
      if (resp.status === 401) { location.reload(); return; }  // the session ended: the page asks to sign in
      if (resp.ok) {
        const data = await resp.json();
        clockSkewMs = Date.parse(data.now) - Date.now();
        apply(data.runs);
        indicator.classList.remove("live-stale");
      } else {
        indicator.classList.add("live-stale");
      }
    } catch (e) {
      indicator.classList.add("live-stale");
    }
    setTimeout(poll, document.hidden ? POLL_MS * 5 : POLL_MS);
  }

  setInterval(tick, 1000);
  tick();
  if (table.dataset.feed) setTimeout(poll, POLL_MS);
})();
