// One run, live: its event log arrives over Server-Sent Events (stdout, stderr and notes in the order
// they happened, by seq), is appended in batches once per animation frame (a 10,000-line log never
// re-renders), and follows the tail unless the reader scrolls up. Each status event refreshes the
// fields from /runs/<id>/data. Everything goes into the page with textContent or text nodes.
"use strict";
(function () {
  const TERMINAL = new Set(["succeeded", "failed", "canceled"]);
  const article = document.getElementById("run");
  const log = document.getElementById("log");
  const follow = document.getElementById("follow-tail");
  const countEl = document.getElementById("log-count");
  const stateEl = document.getElementById("log-state");
  const {duration, timeElement} = window.agentruns;

  let lastSeq = 0, newlines = 0, endsMidLine = false, pending = [], scheduled = false, source = null;
  let run = {status: article.dataset.status, created_at: null, started_at: null, finished_at: null};

  // --- the log -------------------------------------------------------------------------------
  function queue(cls, text) {
    if (!text) return;
    pending.push([cls, text]);
    if (!scheduled) { scheduled = true; requestAnimationFrame(flush); }
  }

  function flush() {
    scheduled = false;
    const batch = pending;
    pending = [];
    const fragment = document.createDocumentFragment();
    let last = log.lastElementChild;
    for (const [cls, text] of batch) {
      for (let i = text.indexOf("\n"); i >= 0; i = text.indexOf("\n", i + 1)) newlines++;
      endsMidLine = !text.endsWith("\n");
      if (last && last.className === cls) {
        last.firstChild.appendData(text);  // one span per stretch of one stream: few nodes at any size
      } else {
        last = document.createElement("span");
        last.className = cls;
        last.appendChild(document.createTextNode(text));
        fragment.appendChild(last);
      }
    }
    log.appendChild(fragment);
    const lines = newlines + (endsMidLine ? 1 : 0);
    countEl.textContent = `${lines} line${lines === 1 ? "" : "s"}`;
    if (follow.checked) log.scrollTop = log.scrollHeight;
  }

  log.addEventListener("scroll", () => {
    follow.checked = log.scrollHeight - log.scrollTop - log.clientHeight < 8;
  });
  follow.addEventListener("change", () => { if (follow.checked) log.scrollTop = log.scrollHeight; });

  // --- the fields ----------------------------------------------------------------------------
  function setField(name, value) {
    for (const el of article.querySelectorAll(`[data-field="${name}"]`)) {
      if (value instanceof Node) { el.replaceChildren(value.cloneNode(true)); continue; }
      let text = value;
      if (value === null || value === undefined || value === "") text = el.tagName === "PRE" && (name === "stdout" || name === "stderr") ? "" : "—";
      else if (typeof value === "object") text = Object.keys(value).length ? JSON.stringify(value, null, 2) : "—";
      el.textContent = String(text);
    }
  }

  function setStatus(status) {
    run.status = status;
    article.dataset.status = status;
    const badge = article.querySelector("[data-status-badge]");
    badge.className = `status status-${status}`;
    badge.textContent = status;
    for (const el of article.querySelectorAll("[data-live-only]")) el.hidden = TERMINAL.has(status);
  }

  function seconds(from, to) { return from && to ? (Date.parse(to) - Date.parse(from)) / 1000 : null; }

  function showDurations() {
    const now = run.finished_at || (TERMINAL.has(run.status) ? null : new Date().toISOString());
    setField("queued_for", duration(seconds(run.created_at, run.started_at || run.finished_at || (run.status === "queued" ? now : null))));
    setField("ran_for", duration(seconds(run.started_at, run.finished_at || (run.status === "running" ? now : null))));
    setField("total", duration(seconds(run.created_at, now)));
  }

  async function refresh() {
    try {
      const resp = await fetch(article.dataset.dataUrl, {headers: {Accept: "application/json"}});
      if (!resp.ok) return;
      run = (await resp.json()).data;
    } catch (e) { return; }
    setStatus(run.status);
    for (const name of ["exit_code", "session_id", "request_id", "output", "usage", "metadata", "stdout", "stderr"]) {
      setField(name, run[name]);
    }
    setField("cost_usd", run.cost_usd === null ? null : `$${run.cost_usd.toFixed(4)}`);
    const error = document.createDocumentFragment();
    if (run.error) {
      const code = document.createElement("code");
      code.textContent = run.error.code;
      error.append(code, ` ${run.error.message}`);
    }
    setField("error", run.error ? error : null);
    for (const name of ["created_at", "started_at", "finished_at"]) setField(name, timeElement(run[name]));
    showDurations();
  }

  setInterval(() => { if (!TERMINAL.has(run.status) && run.created_at) showDurations(); }, 1000);

  // --- the stream ----------------------------------------------------------------------------
  function onEvent(message) {
    const event = JSON.parse(message.data);
    if (event.seq <= lastSeq) return;  // a replay after a reconnect
    lastSeq = event.seq;
    if (event.type === "stdout" || event.type === "stderr") {
      queue(event.type, event.data);
    } else if (event.type === "note") {
      queue("note", `\n[${event.data.note}]\n`);
    } else if (event.type === "status") {
      setStatus(event.data.status);
      if (event.data.error) queue("note", `\n[${event.data.error.code}] ${event.data.error.message}\n`);
      refresh();
      if (TERMINAL.has(event.data.status)) {
        source.close();
        stateEl.textContent = `Run ${event.data.status}; the output above is complete.`;
      }
    }
  }

  function connect() {
    const url = new URL(article.dataset.eventsUrl, location.href);
    if (lastSeq) url.searchParams.set("after_seq", String(lastSeq));
    source = new EventSource(url);
    for (const type of ["status", "stdout", "stderr", "note"]) source.addEventListener(type, onEvent);
    source.onopen = () => { if (!TERMINAL.has(run.status)) stateEl.textContent = "Following live."; };
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED && !TERMINAL.has(run.status)) {
        stateEl.textContent = "Disconnected; reconnecting…";  // the browser gave up: start again from lastSeq
        setTimeout(connect, 3000);
      } else if (!TERMINAL.has(run.status)) {
        stateEl.textContent = "Reconnecting…";  // the browser retries by itself, with Last-Event-ID
      }
    };
  }

  refresh();
  connect();
})();
