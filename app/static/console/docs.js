// Starts the vendored Swagger UI on the spec URL the page names (no inline script: CSP allows none).
"use strict";
(function () {
  const el = document.getElementById("swagger-ui-container");
  const config = Object.assign({url: el.dataset.specUrl, dom_id: "#swagger-ui-container"},
                               JSON.parse(el.dataset.config || "{}"));
  window.ui = window.SwaggerUIBundle(config);
})();
