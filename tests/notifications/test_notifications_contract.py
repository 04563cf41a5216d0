"""The notifications and live routes answer only statuses their OpenAPI documents (never
a 500) for a spread of bad inputs: no token, malformed ids, cursors, limits and bodies.
The SSE routes document their `text/event-stream` 200."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg

from tests.conftest import bearer, create_user

ROUTES = [
    ("get", "/api/v1/me/notification-preferences"),
    ("put", "/api/v1/me/notification-preferences"),
    ("get", "/api/v1/me/notifications"),
    ("post", "/api/v1/me/notifications/{notification_id}/read"),
    ("get", "/api/v1/admin/notifications/dead"),
    ("post", "/api/v1/admin/notifications/dead/requeue"),
    ("get", "/api/v1/admin/queues"),
    ("get", "/api/v1/slots/{slot_id}/events"),
    ("get", "/api/v1/providers/{provider_id}/availability/events"),
]
BAD_IDS = ("not-a-uuid", "00000000-0000-0000-0000-000000000000")
BAD_QUERIES = ("", "?limit=0", "?limit=1000", "?cursor=%00", "?cursor=eyJ4Ijox", "?unread=maybe",
               "?last_event_id=x")  # fmt: skip
BAD_BODIES: tuple[Any, ...] = (None, {}, {"items": "x"}, {"items": [{"kind": "booking.held"}]},
                               {"ids": ["nope"]}, {"ids": None}, [])  # fmt: skip


async def test_routes_answer_only_documented_statuses(
    api: httpx.AsyncClient, db: psycopg.Connection[Any]
) -> None:
    spec = (await api.get("/openapi.json")).json()
    admin = bearer(create_user(db, role="admin"), "admin")
    student = bearer(create_user(db), "student")
    seen = 0
    for method, path in ROUTES:
        op = spec["paths"][path][method]
        documented = {int(s) for s in op["responses"]}
        if path.endswith("/events"):
            assert "text/event-stream" in op["responses"]["200"]["content"]
        for headers in ({}, student, admin, {"Authorization": "Bearer nope"}):
            for ident in BAD_IDS if "{" in path else ("",):
                url = path.replace("{notification_id}", ident).replace("{slot_id}", ident)
                url = url.replace("{provider_id}", ident)
                # the queues route pings the workers (0.5 s): one query is enough
                # bodies vary on writes, queries on reads
                for query in BAD_QUERIES if method == "get" and "queues" not in path else ("",):
                    for body in BAD_BODIES if method in ("put", "post") else (None,):
                        r = await api.request(
                            method.upper(), url + query, headers=headers, json=body
                        )
                        seen += 1
                        assert r.status_code != 500, (method, url + query, body, r.text)
                        assert r.status_code in documented, (
                            method,
                            url + query,
                            body,
                            r.status_code,
                            r.text,
                        )
    assert seen > 250
