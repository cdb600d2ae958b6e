"""The web console: server-rendered pages over the core services, behind a signed session cookie.

Pages: sign in/out (views_auth), the task stream (views_runs), one run (views_run), a new run
(views_new_run), devices (views_devices), webhooks (views_webhooks). Templates are in
app/templates/console/, scripts and styles in app/static/console/. The API docs page (/api/v1/docs) is
flask-smorest's, served from the vendored Swagger UI with the template app/templates/swagger_ui.html.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

SWAGGER_UI_URL = "/static/vendor/swagger-ui/"
# No call to validator.swagger.io (the default): the docs page must work with no internet access.
SWAGGER_UI_CONFIG = {"validatorUrl": None, "deepLinking": True}


def init_app(app: Flask) -> None:
    """Register the console's routes and the docs page's security headers."""
    from flask import Response, request

    from app.console import (  # noqa: F401 (routes)
        views_auth,
        views_devices,
        views_new_run,
        views_run,
        views_runs,
        views_webhooks,
    )
    from app.console.blueprint import DOCS_CSP, blp, secure_headers

    app.register_blueprint(blp)

    @app.after_request
    def _docs_headers(response: Response) -> Response:
        if request.endpoint == "api-docs.openapi_swagger_ui":
            secure_headers(response, DOCS_CSP)
        return response
