// Webhook pages: the attempt log under each delivery, the secret selected whole, the event checkboxes
// ("run.*" includes the others), and the delivery log's state filter applied on change.
"use strict";
(function () {
  document.addEventListener("click", (event) => {
    const toggle = event.target.closest("[data-toggle-row]");
    if (!toggle) return;
    const row = document.getElementById(toggle.getAttribute("aria-controls"));
    if (!row) return;
    row.hidden = !row.hidden;
    toggle.setAttribute("aria-expanded", String(!row.hidden));
  });

  for (const input of document.querySelectorAll("[data-select-all]")) {
    input.addEventListener("focus", () => input.select());
  }

  for (const select of document.querySelectorAll("select[data-auto-submit]")) {
    select.addEventListener("change", () => select.form.requestSubmit());
  }

  for (const group of document.querySelectorAll("[data-event-choices]")) {
    const all = group.querySelector("[data-all-events]");
    if (!all) continue;
    const others = [...group.querySelectorAll('input[name="events"]')].filter((el) => el !== all);
    const sync = () => {
      for (const el of others) {
        el.disabled = all.checked;
        el.closest("label").classList.toggle("included", all.checked);
      }
    };
    all.addEventListener("change", sync);
    sync();
  }
})();
