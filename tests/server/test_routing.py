"""IndexedRouter answers every request as Starlette's Router does: the first matching route
wins, a refused method is a 405, a parameter path and an unknown path go the usual way."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, Router

from server.routing import IndexedRouter


def reply(name: str) -> Callable[[Request], Awaitable[PlainTextResponse]]:
    async def endpoint(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"{name} {dict(request.path_params)}")

    return endpoint


def routes() -> list[Route]:
    return [
        Route("/items/{item_id}", reply("item"), methods=["GET"]),  # shadows /items/new
        Route("/items/new", reply("new"), methods=["GET", "POST"]),
        Route("/login", reply("login"), methods=["POST"]),  # GET: 405
        Route("/login", reply("login-page"), methods=["GET"]),  # a second route, same path
        Route("/session", reply("session")),
        Route("/session/", reply("slash")),
    ]


async def answers(router: Router) -> list[tuple[int, str]]:
    app = Starlette()
    app.router = router
    out = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        for method, path in [
            ("GET", "/items/new"), ("POST", "/items/new"), ("GET", "/items/7"),
            ("POST", "/login"), ("GET", "/login"), ("DELETE", "/login"), ("GET", "/session"),
            ("GET", "/session/"), ("GET", "/nowhere"), ("HEAD", "/session"),
        ]:  # fmt: skip
            r = await http.request(method, path)
            out.append((r.status_code, r.text))
    return out


async def test_same_answers_as_starlettes_router() -> None:
    indexed = IndexedRouter(routes())
    assert sorted(indexed.index) == ["/login", "/session", "/session/"]  # /items/new shadowed
    expected = await answers(Router(routes()))
    assert await answers(indexed) == expected
    assert expected[0] == (200, "item {'item_id': 'new'}")  # the first match wins
    assert expected[1] == (200, "new {}")  # POST: the first route refuses it, the next takes it
    assert expected[5][0] == 405  # DELETE /login: every /login route refuses it
    assert expected[4] == (200, "login-page {}")
