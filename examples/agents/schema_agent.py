"""An agent whose output satisfies seed 04's outputSchema: {"response": str, "confidence": 0..1}.

A stand-in for an LLM agent: it answers deterministically and reports token usage the way a real
model call would, so budgets and schemas can be exercised without any model.
"""

from apiary.agent import run
from apiary.waggle import Usage


def answer(msg):
    question = msg.payload if isinstance(msg.payload, str) else str(msg.payload)
    words = question.split()
    confidence = round(min(1.0, len(words) / 10), 2)
    out = msg.reply({"response": f"You asked about: {question}", "confidence": confidence})
    out.usage = Usage(prompt_tokens=len(words), completion_tokens=len(words) + 4)
    return out


if __name__ == "__main__":
    run(answer)
