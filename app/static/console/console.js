// Shared by every console page: local times, copy buttons, confirmation dialogs, duration formatting.
// Data is only ever put into the page with textContent (never innerHTML), so it shows as text.
"use strict";

window.agentruns = (function () {
  function pad(n) { return String(n).padStart(2, "0"); }

  /** "2026-11-29 08:30:12" in the viewer's time zone (the full ISO time stays in the title). */
  function localTime(iso) {
    const d = new Date(iso);
    if (isNaN(d)) return iso;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
           `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  /** The same rules as app/console/present.py duration(). */
  function duration(seconds) {
    if (seconds === null || seconds === undefined || isNaN(seconds)) return "—";
    seconds = Math.max(0, seconds);
    if (seconds < 60) return `${seconds.toFixed(1)} s`;
    let minutes = Math.floor(seconds / 60);
    const secs = Math.floor(seconds % 60);
    if (minutes < 60) return `${minutes} m ${pad(secs)} s`;
    const hours = Math.floor(minutes / 60);
    minutes %= 60;
    return `${hours} h ${pad(minutes)} m`;
  }

  function showLocalTimes(root) {
    for (const el of (root || document).querySelectorAll("time[data-local-time]")) {
      el.title = el.getAttribute("datetime");
      el.textContent = localTime(el.getAttribute("datetime"));
    }
  }

  /** A <time> element for an ISO time, or a dash. */
  function timeElement(iso) {
    if (!iso) { const s = document.createElement("span"); s.className = "muted"; s.textContent = "—"; return s; }
    const t = document.createElement("time");
    t.setAttribute("datetime", iso);
    t.dataset.localTime = "";
    t.title = iso;
    t.textContent = localTime(iso);
    return t;
  }

  async function copy(text) {
    if (navigator.clipboard && window.isSecureContext) {
      try { await navigator.clipboard.writeText(text); return true; } catch (e) { /* fall back below */ }
    }
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    area.remove();
    return ok;
  }

  document.addEventListener("click", async (event) => {
    const copyButton = event.target.closest("[data-copy]");
    if (copyButton) {
      const label = copyButton.dataset.label || copyButton.textContent;
      copyButton.dataset.label = label;
      copyButton.textContent = (await copy(copyButton.dataset.copy)) ? "Copied" : "Copy failed";
      setTimeout(() => { copyButton.textContent = label; }, 1500);
      return;
    }
    const opener = event.target.closest("[data-open-dialog]");
    if (opener) { document.getElementById(opener.dataset.openDialog).showModal(); return; }
    const closer = event.target.closest("[data-close-dialog]");
    if (closer) closer.closest("dialog").close();
  });

  // A form submitted twice in a row sends once (the server is idempotent anyway).
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form.dataset.submitted) { event.preventDefault(); return; }
    form.dataset.submitted = "1";
    setTimeout(() => { delete form.dataset.submitted; }, 3000);
  });

  document.addEventListener("DOMContentLoaded", () => showLocalTimes(document));
  return {localTime, duration, showLocalTimes, timeElement};
})();
