"""Word-count agent: counts words, lines and characters of a text payload (like ``wc``)."""

from apiary.agent import run


def wordcount(msg):
    text = msg.payload if isinstance(msg.payload, str) else str(msg.payload)
    return {"words": len(text.split()), "lines": len(text.splitlines()), "chars": len(text)}


if __name__ == "__main__":
    run(wordcount)
