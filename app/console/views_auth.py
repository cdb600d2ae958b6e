"""Sign in with an API key, sign out."""
from __future__ import annotations

from flask import g, redirect, render_template, request, url_for

from app.console import session
from app.console.blueprint import blp, local_path


@blp.get("/")
def home():
    """The task stream is the console's front page."""
    return redirect(url_for("console.runs"))


@blp.get("/sign-in")
def sign_in():
    """The sign-in form (straight on to `next` when already signed in)."""
    target = local_path(request.args.get("next"))
    if g.viewer is not None:
        return redirect(target)
    return render_template("console/sign_in.html", next=target)


@blp.post("/sign-in")
def sign_in_submit():
    """Check the key; on success the cookie holds the key's id, never the key."""
    target = local_path(request.form.get("next"))
    key_id = session.key_id_for(request.form.get("api_key", ""))
    if key_id is None:
        return render_template("console/sign_in.html", next=target,
                               error="That API key is not valid (mistyped, or revoked)."), 401
    session.sign_in(session.current(), key_id)
    return redirect(target)


@blp.post("/sign-out")
def sign_out():
    """End this session: the cookie is cleared and refused from now on."""
    state = session.current()
    session.sign_out(state)
    state.flash("ok", "Signed out.")
    return redirect(url_for("console.sign_in"))
