"""Translations of the agent's OpenAI-shaped chat completions to other providers' APIs.

Hand-written, with the gateway's one ``httpx`` client, rather than LiteLLM or the providers' SDKs
(docs/gateway.md, "Providers", says what each would cost): the two APIs are small and stable
enough that a translation of messages, tools, streaming and usage is a few hundred lines, which
starts in no time, adds nothing to install and keeps the budgets' view of every call exact.

A :class:`Translator` turns a request into the provider's (path, body, headers), the provider's
answer into an OpenAI ``chat.completion``, its stream into ``chat.completion.chunk`` events
(:class:`StreamConverter`), and its error bodies into OpenAI-shaped ones.
"""

from __future__ import annotations

from typing import Any, Protocol

Obj = dict[str, Any]


class StreamConverter(Protocol):
    usage: tuple[int, int] | None
    model: str

    def feed(self, event: Obj) -> list[Obj]:
        """One provider event (its JSON ``data``): the OpenAI chunks it makes."""

    def finish(self) -> list[Obj]:
        """The chunks still owed when the provider's stream ended (a finish reason)."""


class Translator(Protocol):
    def request(self, body: Obj, *, stream: bool) -> tuple[str, Obj, dict[str, str]]:
        """(path under the base URL, provider body, extra headers) of a chat completion."""

    def response(self, answer: Obj, model: str) -> Obj:
        """The provider's answer as an OpenAI ``chat.completion``."""

    def stream(self, model: str) -> StreamConverter: ...

    def error(self, status: int, answer: Any) -> Obj:
        """The provider's error body as an OpenAI-shaped one."""


def translator(api: str) -> Translator | None:
    """The translator of ``api`` (None: ``openai``, forwarded as it is)."""
    if api == "anthropic":
        from apiary.gateway.providers.anthropic import Anthropic

        return Anthropic()
    if api == "gemini":
        from apiary.gateway.providers.gemini import Gemini

        return Gemini()
    return None


def chunk(model: str, ident: str, delta: Obj | None, finish: str | None = None) -> Obj:
    """An OpenAI ``chat.completion.chunk`` with one choice (or none, for the usage chunk)."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": ident, "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": choices}  # fmt: skip


def completion(model: str, ident: str, message: Obj, finish: str, usage: tuple[int, int]) -> Obj:
    prompt, out = usage
    return {"id": ident, "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": out,
                      "total_tokens": prompt + out}}  # fmt: skip


def text_of(content: Any) -> str:
    """The text of an OpenAI message content (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text") or "") for p in content if isinstance(p, dict)
            and p.get("type") in ("text", "input_text")
        )  # fmt: skip
    return ""


def error_body(message: str, kind: str, code: str | None = None) -> Obj:
    return {"error": {"message": message, "type": kind, "param": None, "code": code or kind}}


__all__ = ["StreamConverter", "Translator", "chunk", "completion", "text_of", "translator"]
