// A link may carry the key in its fragment (#key=..., which never reaches a server): sign in with it
// at once, and take it out of the address bar and the history first.
"use strict";
(function () {
  const key = new URLSearchParams(location.hash.slice(1)).get("key");
  if (!key) return;
  history.replaceState(null, "", location.pathname + location.search);
  const form = document.getElementById("sign-in-form");
  if (document.getElementById("sign-in-error")) return;  // that key was just refused: do not loop
  document.getElementById("api_key").value = key;
  form.requestSubmit();
})();
