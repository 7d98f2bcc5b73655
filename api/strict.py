"""Strict query parameters: a parameter that the route does not declare is a 422 naming it, not silently ignored.

A mistyped `grup_by=model` or an unsupported `tz=` would otherwise answer 200 with figures the caller
did not ask for.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.routing import BaseRoute

_DECLARED: dict[int, frozenset[str]] = {}


async def reject_unknown_query(request: Request) -> None:
    """A dependency of every route: 422 for each query parameter an API operation does not take (aliases
    count, e.g. `from` and `to`). Pages outside the OpenAPI document (the console, /docs) read their URL in
    the browser and are left alone. A coroutine, so that it runs on the event loop, not a worker thread."""
    route = request.scope.get("route")
    if route is None or not request.query_params or not getattr(route, "include_in_schema", True):
        return
    allowed = declared(route)
    unknown = sorted({name for name in request.query_params if name not in allowed})
    if unknown:
        takes = ", ".join(sorted(allowed)) or "none"
        raise RequestValidationError([
            {"loc": ("query", name), "type": "extra_forbidden",
             "msg": f"unknown query parameter {name!r}; this route takes: {takes}", "input": request.query_params[name]}
            for name in unknown])


def declared(route: BaseRoute) -> frozenset[str]:
    """The query parameter names a route declares, its dependencies' included."""
    found = _DECLARED.get(id(route))
    if found is None:
        dependant = getattr(route, "dependant", None)
        found = frozenset(_names(dependant)) if dependant is not None else frozenset()
        _DECLARED[id(route)] = found
    return found


def _names(dependant: Any) -> set[str]:
    names = {f.alias for f in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _names(sub)
    return names
