"""Upper-case agent: text in, the same text in capitals out (non-text payloads as JSON text)."""

import json

from apiary.agent import run


def upper(msg):
    text = msg.payload if isinstance(msg.payload, str) else json.dumps(msg.payload)
    return text.upper()


if __name__ == "__main__":
    run(upper)
