"""How an application adds to the server's :classify answers without the server knowing it (LitServe's decode /
predict / encode, narrowed to what an app needs; the phishing app's brand checks are one).

A hook is any object with:
- `key`: the answer field it fills (e.g. "phishing");
- `prepare(body) -> context`: runs on the parse pool with the request's parsed JSON before the model is called; it
  reads the example fields it owns (a URL, say) and raises `RequestError(400, ...)` for malformed ones, so a bad
  request costs no model call;
- `async answer(context, decisions) -> list`: one entry per example (None where the hook has nothing to say), given
  the model's threshold decisions (None when the model has no stored threshold). Slow work belongs in threads.
"""

from __future__ import annotations

from typing import Any, Protocol


class ClassifyHook(Protocol):
    key: str

    def prepare(self, body: Any) -> Any: ...

    async def answer(self, context: Any, decisions: list[dict[str, Any]] | None) -> list[Any]: ...
