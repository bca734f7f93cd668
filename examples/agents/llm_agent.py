"""An agent that answers with an LLM, through its node's gateway (docs/gateway.md).

It asks the gateway at ``$APIARY_KEEPER_URL/v1`` (the SDK's ``ctx.llm``) and answers
``{"response": <the model's text>, "confidence": 0.9}`` — the shape seed 04's ``outputSchema``
wants. The provider, its key and the default model come from the AgentSpec's ``spec.llm``; this
process never sees the key.

Knobs (environment):

* ``SYSTEM_PROMPT`` — a system message before the input (none by default);
* ``CALLS`` — LLM calls per message (default 1; the last answer is returned);
* ``STREAM=1`` — stream the answer (the text is the same, it arrives in pieces);
* ``LOOP=1`` — a runaway: call the gateway forever on every message, ignoring refusals. The
  gateway stops it at the token budget (a 429, the message fails with ``TokenBudgetExceeded``)
  and the keeper stops waiting for it.
"""

import os
import sys
import time

from apiary.agent import LlmError, agent


def _ask(ctx, messages):
    if os.environ.get("STREAM") == "1":
        return "".join(ctx.llm.stream(messages))
    return ctx.llm.chat(messages)


@agent
def answer(msg, ctx):
    text = msg.payload if isinstance(msg.payload, str) else str(msg.payload)
    messages = [{"role": "user", "content": text}]
    if os.environ.get("SYSTEM_PROMPT"):
        messages.insert(0, {"role": "system", "content": os.environ["SYSTEM_PROMPT"]})
    if os.environ.get("LOOP") == "1":
        while True:  # the runaway agent: never answers, never gives up
            try:
                _ask(ctx, messages)
            except LlmError as exc:
                print(f"llm_agent: refused ({exc}); trying again", file=sys.stderr, flush=True)
                time.sleep(0.05)
    reply = ""
    for _ in range(max(1, int(os.environ.get("CALLS") or 1))):
        reply = _ask(ctx, messages)
    return {"response": reply, "confidence": 0.9}


if __name__ == "__main__":
    answer.run()
