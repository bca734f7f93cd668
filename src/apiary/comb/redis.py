"""The Redis Comb (``redis://host:6379/0?prefix=apiary:``): session memory only.

Per session (hash-tagged, so a session's keys share a cluster slot):

* ``{p}comb:{cell/session}:kv`` — hash key → JSON text
* ``…:exp`` — sorted set key → expiry (epoch seconds from *our* clock, not Redis's, so tests can
  inject time and every backend expires the same way)
* ``…:used`` — bytes held (kept exact by every script)
* ``…:lists`` — set of list names; ``…:l:<name>`` — one Redis list each

Every write is one Lua script that first drops the session's expired keys, then checks the limit,
then writes — atomic on the server. ``incr`` is compare-and-set: Python adds the numbers (so
integers stay exact, as on the other backends) and the script writes only if the value is still
the one read, else we read again.

Long-term memory needs a full-text index. The Redis on the project's machines has no RediSearch
module (``MODULE LIST`` is empty), so it is refused with a clear 501 that says to use a
``sqlite://`` or ``postgresql://`` comb.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from apiary.comb.base import (
    Comb,
    CombSettings,
    MemoryHit,
    NotSupported,
    add_numbers,
    decode,
    encode,
    too_large,
)
from apiary.errors import BadRequest, Unavailable

_PURGE = """
local function purge(kv, exp, usedk, now)
  local dead = redis.call('ZRANGEBYSCORE', exp, '-inf', now)
  for _, k in ipairs(dead) do
    local v = redis.call('HGET', kv, k)
    if v then
      redis.call('DECRBY', usedk, #k + #v)
      redis.call('HDEL', kv, k)
    end
    redis.call('ZREM', exp, k)
  end
end
"""

# KEYS kv exp used; ARGV key text expires now limit cas expected keepttl
_PUT = (
    _PURGE
    + """
local kv, exp, usedk = KEYS[1], KEYS[2], KEYS[3]
local key, text, expires = ARGV[1], ARGV[2], ARGV[3]
purge(kv, exp, usedk, ARGV[4])
local old = redis.call('HGET', kv, key)
if ARGV[6] == '1' then
  if (old == false and ARGV[7] ~= '') or (old ~= false and old ~= ARGV[7]) then
    return {'RETRY', 0}
  end
end
local delta = #key + #text
if old then delta = delta - #key - #old end
local used = tonumber(redis.call('GET', usedk) or '0')
if delta > 0 and used + delta > tonumber(ARGV[5]) then return {'LIMIT', used + delta} end
redis.call('HSET', kv, key, text)
redis.call('INCRBY', usedk, delta)
if ARGV[8] ~= '1' then
  if expires == '' then redis.call('ZREM', exp, key) else redis.call('ZADD', exp, expires, key) end
end
return {'OK', used + delta}
"""
)

# KEYS kv exp used; ARGV key now
_DELETE = (
    _PURGE
    + """
purge(KEYS[1], KEYS[2], KEYS[3], ARGV[2])
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DECRBY', KEYS[3], #ARGV[1] + #old)
return 1
"""
)

# KEYS kv exp used; ARGV now → bytes held
_USAGE = (
    _PURGE
    + """
purge(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
return tonumber(redis.call('GET', KEYS[3]) or '0')
"""
)

# KEYS kv exp used lists list; ARGV name text now limit
_APPEND = (
    _PURGE
    + """
purge(KEYS[1], KEYS[2], KEYS[3], ARGV[3])
local delta = #ARGV[2]
if redis.call('SISMEMBER', KEYS[4], ARGV[1]) == 0 then delta = delta + #ARGV[1] end
local used = tonumber(redis.call('GET', KEYS[3]) or '0')
if used + delta > tonumber(ARGV[4]) then return {'LIMIT', used + delta} end
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('INCRBY', KEYS[3], delta)
return {'OK', redis.call('RPUSH', KEYS[5], ARGV[2])}
"""
)

# KEYS kv exp used lists; ARGV list-key prefix → keys + lists removed
_CLEAR = """
local n = redis.call('HLEN', KEYS[1])
local names = redis.call('SMEMBERS', KEYS[4])
for _, name in ipairs(names) do redis.call('DEL', ARGV[1] .. name) end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return n + #names
"""

_GLOB_SPECIAL = "\\*?[]"


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in _GLOB_SPECIAL else c for c in text)


def parse_redis_url(url: str) -> tuple[str, str]:
    """(URL for redis-py, key prefix); ``prefix=`` is ours, other parameters go to redis-py."""
    parts = urlsplit(url)
    prefix = "apiary:"
    rest: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "prefix":
            prefix = value
        else:
            rest.append((name, value))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), "")), prefix


class RedisComb(Comb):
    supports_long_term = False

    def __init__(self, url: str, settings: CombSettings | None = None) -> None:
        super().__init__(settings)
        self.url, self.prefix = parse_redis_url(url)
        self._r: Any = None  # redis.asyncio.Redis
        self._scripts: dict[str, Any] = {}

    async def open(self) -> None:
        if self._r is not None:
            return
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        try:
            client = aioredis.Redis.from_url(self.url, decode_responses=True)
        except ValueError as exc:
            raise BadRequest(f"comb URL {self.url!r}: {exc}") from None
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            await client.aclose()
            raise Unavailable(f"cannot connect to the Redis comb at {self.url}: {exc}") from exc
        self._r = client
        for name, lua in (
            ("put", _PUT),
            ("delete", _DELETE),
            ("usage", _USAGE),
            ("append", _APPEND),
            ("clear", _CLEAR),
        ):
            self._scripts[name] = client.register_script(lua)

    async def close(self) -> None:
        client, self._r = self._r, None
        if client is not None:
            await client.aclose()

    def _base(self, session: str) -> str:
        return f"{self.prefix}comb:{{{session}}}"

    def _keys3(self, session: str) -> list[str]:
        b = self._base(session)
        return [b + ":kv", b + ":exp", b + ":used"]

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        from redis.exceptions import RedisError

        if self._r is None:
            raise RuntimeError("the Redis comb is not open")
        try:
            return await self._scripts[name](keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise Unavailable(f"Redis comb unavailable: {exc}") from exc

    async def _pipeline(self, calls: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        from redis.exceptions import RedisError

        if self._r is None:
            raise RuntimeError("the Redis comb is not open")
        try:
            async with self._r.pipeline(transaction=True) as pipe:
                for method, args in calls:
                    getattr(pipe, method)(*args)
                return list(await pipe.execute())
        except (RedisError, OSError) as exc:
            raise Unavailable(f"Redis comb unavailable: {exc}") from exc

    # ---------------------------------------------------------------- session memory

    async def _get(self, session: str, key: str, now: float) -> str | None:
        kv, exp, _ = self._keys3(session)
        value, expires = await self._pipeline([("hget", (kv, key)), ("zscore", (exp, key))])
        if value is None or (expires is not None and float(expires) <= now):
            return None
        return str(value)

    async def _put(
        self,
        session: str,
        key: str,
        text: str,
        expires: float | None,
        now: float,
        *,
        expected: str | None = None,
        keep_ttl: bool = False,
    ) -> bool:
        status, used = await self._run(
            "put",
            self._keys3(session),
            [
                key,
                text,
                "" if expires is None else repr(expires),
                repr(now),
                self.limit,
                "0" if expected is None else "1",
                expected or "",
                "1" if keep_ttl else "0",
            ],
        )
        if status == "LIMIT":
            raise too_large(session, int(used), self.limit)
        return bool(status == "OK")

    async def _set(
        self, session: str, key: str, text: str, expires: float | None, now: float
    ) -> None:
        await self._put(session, key, text, expires, now)

    async def _delete(self, session: str, key: str, now: float) -> bool:
        return bool(await self._run("delete", self._keys3(session), [key, repr(now)]))

    async def _incr(self, session: str, key: str, by: int | float, now: float) -> int | float:
        for _ in range(100):
            old = await self._get(session, key, now)
            value = add_numbers(None if old is None else decode(old), by, key)
            if await self._put(session, key, encode(value), None, now, expected=old or "",
                               keep_ttl=True):  # fmt: skip
                return value
        raise Unavailable(f"comb key {key!r} of session {session!r} is changing too fast to incr")

    async def _keys(self, session: str, now: float) -> list[str]:
        kv, exp, _ = self._keys3(session)
        names, dead = await self._pipeline(
            [("hkeys", (kv,)), ("zrangebyscore", (exp, "-inf", repr(now)))]
        )
        gone = set(dead)
        return [str(k) for k in names if k not in gone]

    async def _clear(self, session: str) -> int:
        b = self._base(session)
        return int(await self._run("clear", [*self._keys3(session), b + ":lists"], [b + ":l:"]))

    async def _usage(self, session: str, now: float) -> int:
        return int(await self._run("usage", self._keys3(session), [repr(now)]))

    async def _append(self, session: str, name: str, text: str, now: float) -> int:
        b = self._base(session)
        keys = [*self._keys3(session), b + ":lists", b + ":l:" + name]
        status, n = await self._run("append", keys, [name, text, repr(now), self.limit])
        if status == "LIMIT":
            raise too_large(session, int(n), self.limit)
        return int(n)

    async def _list_range(self, session: str, name: str, start: int, stop: int) -> list[str]:
        (items,) = await self._pipeline(
            [("lrange", (self._base(session) + ":l:" + name, start, stop))]
        )
        return [str(i) for i in items]

    async def _scan(self, pattern: str) -> list[str]:
        from redis.exceptions import RedisError

        assert self._r is not None
        try:
            return [str(k) async for k in self._r.scan_iter(match=pattern, count=500)]
        except (RedisError, OSError) as exc:
            raise Unavailable(f"Redis comb unavailable: {exc}") from exc

    async def _purge_expired(self, now: float) -> int:
        removed = 0
        for exp in await self._scan(f"{_glob_escape(self.prefix)}comb:*:exp"):
            base = exp[: -len(":exp")]
            before = await self._pipeline([("hlen", (base + ":kv",))])
            await self._run("usage", [base + ":kv", exp, base + ":used"], [repr(now)])
            after = await self._pipeline([("hlen", (base + ":kv",))])
            removed += int(before[0]) - int(after[0])
        return removed

    async def _forget_cell(self, cell: str) -> None:
        keys = await self._scan(f"{_glob_escape(self.prefix)}comb:{{{_glob_escape(cell)}/*")
        if keys:
            await self._pipeline(
                [("delete", tuple(keys[i : i + 500])) for i in range(0, len(keys), 500)]
            )

    # --------------------------------------------------------------- long-term memory

    def _unsupported(self) -> NotSupported:
        return NotSupported(
            "long-term memory is not supported by the redis:// comb (no RediSearch module): "
            "use a sqlite:// or postgresql:// comb, e.g. the store's database"
        )

    async def _remember(self, cell: str, text: str, metadata: dict[str, Any]) -> str:
        raise self._unsupported()

    async def _search(self, cell: str, words: list[str], limit: int) -> list[MemoryHit]:
        raise self._unsupported()

    async def _forget(self, cell: str, memory_id: str) -> bool:
        raise self._unsupported()


__all__ = ["RedisComb", "parse_redis_url"]
