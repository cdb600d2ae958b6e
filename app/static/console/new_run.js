// The command field only matters for provider `custom`.
"use strict";
(function () {
  const provider = document.getElementById("provider");
  const field = document.getElementById("command-field");
  if (!provider || !field) return;
  const sync = () => { field.hidden = provider.value !== "custom"; };
  provider.addEventListener("change", sync);
  sync();
})();
