"""Stand-ins of the model APIs the agent CLIs call, for offline tests of the genuine CLIs.

`start_standin()` starts one stdlib HTTP server on a free loopback port that speaks the Anthropic
Messages API, the OpenAI Responses API and OpenAI chat completions (all with streaming), logs every
request in memory, and picks its reply from markers in the prompt (see script.py).
"""
from tests.standins.script import answer_text, done_text, error_text
from tests.standins.server import LoggedRequest, StandIn, start_standin

__all__ = ["LoggedRequest", "StandIn", "answer_text", "done_text", "error_text", "start_standin"]
