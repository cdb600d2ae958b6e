// The SSH fields only matter for the ssh driver.
"use strict";
(function () {
  const driver = document.getElementById("driver");
  const fields = document.getElementById("ssh-fields");
  if (!driver || !fields) return;
  const sync = () => { fields.hidden = driver.value !== "ssh"; };
  driver.addEventListener("change", sync);
  sync();
})();
