"""Echo agent: answers every message with its payload unchanged."""

from apiary.agent import run

if __name__ == "__main__":
    run(lambda msg: msg.payload)
