"""The Blueprint our resources use: flask-smorest's, with a webargs parser that turns every body
Python's json cannot load into webargs' 400 (our `invalid_json`), not only syntax errors."""
from __future__ import annotations

import json

import flask_smorest
from webargs.flaskparser import FlaskParser


class Parser(FlaskParser):
    def _raw_load_json(self, req):
        try:
            return super()._raw_load_json(req)
        except json.JSONDecodeError:
            raise  # webargs' own handling: an empty body is "no body", the rest a 400
        except (ValueError, RecursionError) as exc:
            # Valid JSON Python will not load: an integer of more than 4300 digits (ValueError), or
            # nesting deeper than the recursion limit. Neither is a server error.
            self._handle_invalid_json_error(exc, req)


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = Parser()
