"""OpenAI chat completions ↔ Google Gemini ``generateContent`` (``streamGenerateContent?alt=sse``).

Request: ``system``/``developer`` messages become ``systemInstruction``; user and assistant turns
``contents`` with roles ``user``/``model``; an assistant's ``tool_calls`` become ``functionCall``
parts and ``tool`` messages ``functionResponse`` parts (named after the call they answer);
``tools`` become ``functionDeclarations`` (JSON Schema keys Gemini refuses dropped), and
``max_tokens``, ``temperature``, ``top_p``, ``stop`` go in ``generationConfig``. Answer: text and
``functionCall`` parts become ``content`` and ``tool_calls`` (ids ``call_<n>`` where Gemini gives
none); ``finishReason`` the ``finish_reason``; ``usageMetadata`` the usage (thinking tokens count
as completion). Streams: each SSE chunk's parts become chunks as they come.
"""

from __future__ import annotations

from typing import Any

import orjson

from apiary.gateway.providers import Obj, chunk, completion, error_body, text_of

FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter",
          "RECITATION": "content_filter", "BLOCKLIST": "content_filter",
          "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter"}  # fmt: skip
REFUSED_SCHEMA_KEYS = frozenset({"additionalProperties", "$schema", "strict", "$id", "$defs"})


def _schema(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _schema(v) for k, v in value.items() if k not in REFUSED_SCHEMA_KEYS}
    if isinstance(value, list):
        return [_schema(v) for v in value]
    return value


def _parts(content: Any) -> list[Obj]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    out: list[Obj] = []
    for part in content or []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            out.append({"text": str(part.get("text") or "")})
        elif part.get("type") == "image_url":
            url = (part.get("image_url") or {}).get("url")
            if isinstance(url, str) and url.startswith("data:") and ";base64," in url:
                media, data = url[5:].split(";base64,", 1)
                out.append({"inlineData": {"mimeType": media, "data": data}})
            elif isinstance(url, str):
                out.append({"fileData": {"fileUri": url}})
    return out


def _contents(messages: list[Any]) -> tuple[str, list[Obj]]:
    system: list[str] = []
    turns: list[Obj] = []
    names: dict[str, str] = {}  # tool call id → function name

    def add(role: str, parts: list[Obj]) -> None:
        if turns and turns[-1]["role"] == role:
            turns[-1]["parts"].extend(parts)
        else:
            turns.append({"role": role, "parts": parts})

    for m in messages:
        if not isinstance(m, dict):
            continue
        role = m.get("role")
        if role in ("system", "developer"):
            system.append(text_of(m.get("content")))
        elif role == "assistant":
            parts = _parts(m.get("content"))
            for call in m.get("tool_calls") or []:
                fn = (call or {}).get("function") or {}
                name = str(fn.get("name") or "")
                names[str(call.get("id") or "")] = name
                try:
                    args = orjson.loads(fn.get("arguments") or "{}")
                except orjson.JSONDecodeError:
                    args = {"arguments": fn.get("arguments")}
                parts.append({"functionCall": {"name": name, "args": args}})
            add("model", parts)
        elif role == "tool":
            text = text_of(m.get("content"))
            try:
                result = orjson.loads(text)
            except orjson.JSONDecodeError:
                result = None
            response = result if isinstance(result, dict) else {"content": text}
            name = names.get(str(m.get("tool_call_id") or ""), str(m.get("name") or "tool"))
            add("user", [{"functionResponse": {"name": name, "response": response}}])
        else:
            add("user", _parts(m.get("content")))
    return "\n\n".join(s for s in system if s), turns


def usage_of(meta: Any) -> tuple[int, int]:
    if not isinstance(meta, dict):
        return (0, 0)
    prompt = int(meta.get("promptTokenCount") or 0)
    out = int(meta.get("candidatesTokenCount") or 0) + int(meta.get("thoughtsTokenCount") or 0)
    return (prompt, out)


def _answer_parts(answer: Obj, first_call: int) -> tuple[str, list[Obj], str | None]:
    """(text, OpenAI tool calls, finish reason) of the first candidate."""
    candidates = answer.get("candidates") or []
    cand = candidates[0] if candidates and isinstance(candidates[0], dict) else {}
    text: list[str] = []
    calls: list[Obj] = []
    for part in (cand.get("content") or {}).get("parts") or []:
        if not isinstance(part, dict) or part.get("thought"):
            continue
        if isinstance(part.get("text"), str):
            text.append(part["text"])
        call = part.get("functionCall")
        if isinstance(call, dict):
            ident = call.get("id") or f"call_{first_call + len(calls)}"
            calls.append({"id": ident, "type": "function",
                          "function": {"name": call.get("name"),
                                       "arguments": orjson.dumps(call.get("args") or {})
                                       .decode()}})  # fmt: skip
    reason = cand.get("finishReason")
    finish = None
    if reason:
        finish = "tool_calls" if calls else FINISH.get(str(reason), "stop")
    return "".join(text), calls, finish


class Gemini:
    def request(self, body: Obj, *, stream: bool) -> tuple[str, Obj, dict[str, str]]:
        system, contents = _contents(body.get("messages") or [])
        out: Obj = {"contents": contents}
        if system:
            out["systemInstruction"] = {"parts": [{"text": system}]}
        config: Obj = {}
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        if limit:
            config["maxOutputTokens"] = limit
        for ours, theirs in (("temperature", "temperature"), ("top_p", "topP")):
            if body.get(ours) is not None:
                config[theirs] = body[ours]
        stop = body.get("stop")
        if stop:
            config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
        if config:
            out["generationConfig"] = config
        declarations = []
        for tool in body.get("tools") or []:
            fn = (tool or {}).get("function") or {}
            if fn.get("name"):
                declared = {"name": fn["name"], "description": fn.get("description") or ""}
                if fn.get("parameters"):
                    declared["parameters"] = _schema(fn["parameters"])
                declarations.append(declared)
        if declarations:
            out["tools"] = [{"functionDeclarations": declarations}]
            choice = body.get("tool_choice")
            mode = {"auto": "AUTO", "required": "ANY", "none": "NONE"}.get(str(choice))
            if isinstance(choice, dict):
                name = (choice.get("function") or {}).get("name")
                out["toolConfig"] = {
                    "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}
                }
            elif mode:
                out["toolConfig"] = {"functionCallingConfig": {"mode": mode}}
        model = str(body.get("model") or "").removeprefix("models/")
        verb = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"/models/{model}:{verb}", out, {}

    def response(self, answer: Obj, model: str) -> Obj:
        text, calls, finish = _answer_parts(answer, 0)
        message: Obj = {"role": "assistant", "content": text if text or not calls else None}
        if calls:
            message["tool_calls"] = calls
        name = str(answer.get("modelVersion") or model)
        return completion(name, str(answer.get("responseId") or "gemini"), message,
                          finish or "stop", usage_of(answer.get("usageMetadata")))  # fmt: skip

    def stream(self, model: str) -> GeminiStream:
        return GeminiStream(model)

    def error(self, status: int, answer: Any) -> Obj:
        err = answer.get("error") if isinstance(answer, dict) else None
        if isinstance(answer, list) and answer and isinstance(answer[0], dict):
            err = answer[0].get("error")
        if isinstance(err, dict):
            code = str(err.get("status") or "api_error")
            kind = "invalid_request_error" if status in (400, 404) else code.lower()
            return error_body(str(err.get("message") or ""), kind, code)
        return error_body(f"the Gemini API answered {status}", "api_error")


class GeminiStream:
    """Gemini SSE chunks (each a partial ``GenerateContentResponse``) → OpenAI chunks."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = "gemini"
        self.usage: tuple[int, int] | None = None
        self._started = False
        self._calls = 0
        self._finished = False

    def feed(self, event: Obj) -> list[Obj]:
        if event.get("modelVersion"):
            self.model = str(event["modelVersion"])
        if event.get("responseId"):
            self.id = str(event["responseId"])
        if event.get("usageMetadata"):
            self.usage = usage_of(event["usageMetadata"])
        if isinstance(event.get("error"), dict):
            return [self.error_chunk(event["error"])]
        text, calls, finish = _answer_parts(event, self._calls)
        out: list[Obj] = []
        if not self._started:
            self._started = True
            out.append(chunk(self.model, self.id, {"role": "assistant", "content": ""}))
        if text:
            out.append(chunk(self.model, self.id, {"content": text}))
        if calls:
            indexed = [{"index": self._calls + i, **c} for i, c in enumerate(calls)]
            self._calls += len(calls)
            out.append(chunk(self.model, self.id, {"tool_calls": indexed}))
        if finish:
            self._finished = True
            if self._calls and finish == "stop":
                finish = "tool_calls"
            out.append(chunk(self.model, self.id, {}, finish))
        return out

    def error_chunk(self, err: Obj) -> Obj:
        return {"error": error_body(str(err.get("message")), "api_error",
                                    str(err.get("status") or "api_error"))["error"]}  # fmt: skip

    def finish(self) -> list[Obj]:
        return [] if self._finished else [chunk(self.model, self.id, {}, "stop")]


__all__ = ["Gemini", "GeminiStream"]
