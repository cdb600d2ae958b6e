"""A browser view of one run's live output. The page holds no data: it reads the API with the key
the viewer types (kept in sessionStorage), so it needs no cookie session or key in the URL."""
from __future__ import annotations

from flask import Blueprint, render_template

blp = Blueprint("web", __name__)


@blp.get("/runs/<run_id>")
def run_view(run_id: str):
    """The live view of a run: status, prompt, stdout and stderr as they arrive."""
    return render_template("run.html", run_id=run_id)
