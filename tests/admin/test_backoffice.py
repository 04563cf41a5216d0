"""The back-office: KYC uploads (magic bytes, size → 415/413 problem+json) and decisions
(an unverified provider is absent from search and appears once approved), account
activation, bookings, complaints with refunds, session evaluations, the audit trail
(every admin action leaves before/after) and admin-only routes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis

from core.settings import get_settings
from core.storage import LocalStorage, S3Storage
from indexer.projection import build_all
from indexer.relay import PostgresSink, Relay, RelayConfig
from tests.booking.helpers import SLOT_START
from tests.conftest import TEST_REDIS_URL, bearer, create_provider, create_user
from tests.reviews.helpers import AFTER, audit_rows, completed_booking, tutor

PDF = b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)
JPEG = b"\xff\xd8\xff\xe0" + bytes(64)


@pytest.fixture
def clock(app: Any) -> None:
    from api.deps import get_now

    app.dependency_overrides[get_now] = lambda: AFTER


@pytest.fixture
def storage_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Uploads go to a temporary directory; KYC_MAX_BYTES = 4096."""
    from core.storage import get_storage

    monkeypatch.setenv("STORAGE_DIR", str(tmp_path))
    monkeypatch.setenv("KYC_MAX_BYTES", "4096")
    get_settings.cache_clear()
    get_storage.cache_clear()
    yield tmp_path
    monkeypatch.undo()
    get_settings.cache_clear()
    get_storage.cache_clear()


def _drain(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        return Relay(conn, PostgresSink(), RelayConfig()).drain()


async def _listed(api: httpx.AsyncClient, provider: Any) -> bool:
    redis.Redis.from_url(TEST_REDIS_URL).flushdb()
    r = await api.get("/api/v1/search/tutors", params={"limit": 100})
    return str(provider) in [i["id"] for i in r.json()["items"]]


async def _upload(
    api: httpx.AsyncClient, who: Any, data: bytes, content_type: str = "application/pdf"
) -> httpx.Response:
    return await api.post(
        "/api/v1/profiles/me/kyc-documents",
        headers=bearer(who, "tutor"),
        data={"type": "passport"},
        files={"file": ("doc", data, content_type)},
    )


# --- KYC ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "kind"), [(PDF, "application/pdf"), (PNG, "image/png"), (JPEG, "image/jpeg")]
)
async def test_a_document_is_stored_with_its_detected_type(
    api: httpx.AsyncClient, db: psycopg.Connection, storage_dir: Path, data: bytes, kind: str
) -> None:
    provider = tutor(db, kyc_status="pending")
    r = await _upload(api, provider, data, "application/octet-stream")
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["content_type"], body["size_bytes"], body["doc_type"]) == (
        kind,
        len(data),
        "passport",
    )
    key = db.execute("SELECT storage_key FROM kyc_documents").fetchone()
    assert key is not None
    assert (storage_dir / key[0]).read_bytes() == data
    listed = await api.get("/api/v1/profiles/me/kyc-documents", headers=bearer(provider, "tutor"))
    assert [d["id"] for d in listed.json()] == [body["id"]]


async def test_a_wrong_type_is_415_and_an_oversize_file_413(
    api: httpx.AsyncClient, db: psycopg.Connection, storage_dir: Path
) -> None:
    provider = tutor(db, kyc_status="pending")
    # declared as a PNG, but the bytes are a script: the magic bytes decide
    r = await _upload(api, provider, b"#!/bin/sh\necho hi\n", "image/png")
    assert r.status_code == 415
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "unsupported_media_type"
    r = await _upload(api, provider, PDF + bytes(4096))
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "payload_too_large"
    assert (await _upload(api, provider, PDF[:3] + bytes(10))).status_code == 415  # truncated magic
    assert db.execute("SELECT count(*) FROM kyc_documents").fetchone() == (0,)
    assert not any(storage_dir.iterdir())  # noqa: ASYNC240 - a tmp dir listing


async def test_an_unverified_provider_appears_in_search_once_approved(
    api: httpx.AsyncClient, db: psycopg.Connection, database_url: str
) -> None:
    admin = create_user(db, role="admin")
    provider = tutor(db, kyc_status="pending")
    with db.transaction():
        build_all(db)
    assert not await _listed(api, provider)
    pending = await api.get("/api/v1/admin/kyc/pending", headers=bearer(admin, "admin"))
    assert pending.status_code == 200, pending.text
    assert [p["user_id"] for p in pending.json()] == [str(provider)]

    url = f"/api/v1/admin/kyc/{provider}/verify"
    r = await api.post(
        url, headers=bearer(admin, "admin"), json={"decision": "approve", "note": "passport ok"}
    )
    assert r.status_code == 200
    assert r.json() == {
        "user_id": str(provider),
        "kyc_status_before": "pending",
        "kyc_status": "verified",
    }
    assert not await _listed(api, provider)  # not indexed yet
    assert _drain(database_url) == 1
    assert await _listed(api, provider)
    assert audit_rows(db, "kyc.approved") == [
        (admin, {"kyc_status": "pending"}, {"kyc_status": "verified", "note": "passport ok"})
    ]

    r = await api.post(url, headers=bearer(admin, "admin"), json={"decision": "reject"})
    assert r.json()["kyc_status"] == "rejected"
    assert _drain(database_url) == 1
    assert not await _listed(api, provider)
    missing = await api.post(
        f"/api/v1/admin/kyc/{admin}/verify",
        headers=bearer(admin, "admin"),
        json={"decision": "approve"},
    )
    assert missing.status_code == 404


# --- accounts, bookings, audit ------------------------------------------------------------------


async def test_deactivate_and_reactivate_are_audited_and_move_search(
    api: httpx.AsyncClient, db: psycopg.Connection, database_url: str
) -> None:
    admin = create_user(db, role="admin")
    provider = tutor(db)
    with db.transaction():
        build_all(db)
    assert await _listed(api, provider)
    r = await api.post(f"/api/v1/admin/users/{provider}/deactivate", headers=bearer(admin, "admin"))
    assert r.status_code == 200
    assert r.json()["active"] is False
    _drain(database_url)
    assert not await _listed(api, provider)
    r = await api.post(f"/api/v1/admin/users/{provider}/reactivate", headers=bearer(admin, "admin"))
    assert r.json()["active"] is True
    _drain(database_url)
    assert await _listed(api, provider)
    assert audit_rows(db, "user.deactivated") == [(admin, {"active": True}, {"active": False})]
    assert audit_rows(db, "user.activated") == [(admin, {"active": False}, {"active": True})]
    own = await api.post(f"/api/v1/admin/users/{admin}/deactivate", headers=bearer(admin, "admin"))
    assert own.status_code == 409
    assert (
        await api.post(f"/api/v1/admin/users/{provider}/suspend", headers=bearer(admin, "admin"))
    ).status_code == 422


async def test_users_filter_by_kyc_status(api: httpx.AsyncClient, db: psycopg.Connection) -> None:
    admin = create_user(db, role="admin")
    pending, verified = tutor(db, kyc_status="pending"), tutor(db)
    r = await api.get(
        "/api/v1/admin/users", headers=bearer(admin, "admin"), params={"kyc_status": "pending"}
    )
    assert [u["id"] for u in r.json()["items"]] == [str(pending)]
    r = await api.get(
        "/api/v1/admin/users",
        headers=bearer(admin, "admin"),
        params={"kyc_status": "verified", "role": "tutor"},
    )
    assert [u["id"] for u in r.json()["items"]] == [str(verified)]


async def test_admin_bookings_are_filtered_and_paged(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    admin = create_user(db, role="admin")
    a, b = tutor(db), tutor(db)
    done, student = completed_booking(db, a)
    other, _ = completed_booking(db, b, start=SLOT_START + timedelta(hours=3), status="confirmed")
    later, _ = completed_booking(db, a, student_id=student, start=SLOT_START + timedelta(hours=6))
    h = bearer(admin, "admin")
    ids = lambda r: [i["id"] for i in r.json()["items"]]  # noqa: E731
    assert ids(await api.get("/api/v1/admin/bookings", headers=h)) == [
        str(done),
        str(other),
        str(later),
    ]
    assert ids(
        await api.get("/api/v1/admin/bookings", headers=h, params={"status": "confirmed"})
    ) == [str(other)]
    assert ids(
        await api.get("/api/v1/admin/bookings", headers=h, params={"provider_id": str(a)})
    ) == [str(done), str(later)]
    assert ids(
        await api.get("/api/v1/admin/bookings", headers=h, params={"student_id": str(student)})
    ) == [str(done), str(later)]
    window = {
        "from": (SLOT_START + timedelta(hours=1)).isoformat(),
        "to": (SLOT_START + timedelta(hours=5)).isoformat(),
    }
    assert ids(await api.get("/api/v1/admin/bookings", headers=h, params=window)) == [str(other)]
    first = await api.get("/api/v1/admin/bookings", headers=h, params={"limit": 2})
    rest = await api.get(
        "/api/v1/admin/bookings",
        headers=h,
        params={"limit": 2, "cursor": first.json()["next_cursor"]},
    )
    assert ids(first) + ids(rest) == [str(done), str(other), str(later)]
    reused = await api.get(
        "/api/v1/admin/bookings",
        headers=h,
        params={"status": "completed", "cursor": first.json()["next_cursor"]},
    )
    assert reused.status_code == 422


async def test_complaints_flow_with_a_refund_due(
    api: httpx.AsyncClient, db: psycopg.Connection, clock: None
) -> None:
    admin = create_user(db, role="admin")
    provider = tutor(db)
    booking, student = completed_booking(db, provider)
    url = f"/api/v1/bookings/{booking}/complaints"
    assert (
        await api.post(url, headers=bearer(create_user(db), "student"), json={"reason": "x"})
    ).status_code == 404
    assert (
        await api.post(url, headers=bearer(admin, "admin"), json={"reason": "x"})
    ).status_code == 403
    r = await api.post(
        url, headers=bearer(student, "student"), json={"reason": "The tutor never came"}
    )
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    h = bearer(admin, "admin")
    listed = await api.get("/api/v1/admin/complaints", headers=h, params={"status": "open"})
    assert [c["id"] for c in listed.json()["items"]] == [cid]
    patch = f"/api/v1/admin/complaints/{cid}"
    r = await api.patch(patch, headers=h, json={"status": "in_review", "note": "asking the tutor"})
    assert r.json()["status"] == "in_review"
    too_much = await api.patch(
        patch, headers=h, json={"status": "closed", "note": "x", "refund_minor": 1001}
    )
    assert too_much.status_code == 409
    r = await api.patch(
        patch, headers=h, json={"status": "closed", "note": "refunded", "refund_minor": 1000}
    )
    assert r.status_code == 200
    assert (r.json()["refund_due_minor"], r.json()["refund_status"]) == (1000, "due")
    again = await api.patch(patch, headers=h, json={"status": "in_review", "note": "reopen"})
    assert again.status_code == 409
    assert audit_rows(db, "complaint.in_review") == [
        (admin, {"status": "open", "note": None, "refund_due_minor": None, "refund_status": None},
         {"status": "in_review", "note": "asking the tutor", "refund_due_minor": None, "refund_status": None})
    ]  # fmt: skip
    assert audit_rows(db, "complaint.closed")[0][2]["refund_due_minor"] == 1000
    events = [
        r[0]
        for r in db.execute(
            "SELECT event_type FROM outbox WHERE aggregate_type = 'complaint' ORDER BY id"
        )
    ]
    assert events == ["complaint.filed", "complaint.refund_due"]


async def test_every_admin_action_leaves_an_audit_row_with_before_and_after(
    api: httpx.AsyncClient, db: psycopg.Connection, clock: None
) -> None:
    admin = create_user(db, role="admin")
    provider = tutor(db, kyc_status="pending")
    booking, student = completed_booking(db, provider)
    review = (await api.post(f"/api/v1/bookings/{booking}/review", headers=bearer(student, "student"),
                             json={"rating": 2, "locale": "en"})).json()  # fmt: skip
    complaint = (await api.post(f"/api/v1/bookings/{booking}/complaints", headers=bearer(student, "student"),
                                json={"reason": "late"})).json()  # fmt: skip
    h = bearer(admin, "admin")
    actions = [
        ("post", f"/api/v1/admin/reviews/{review['id']}/hide", {"reason": "spam"}, "review.hidden"),
        ("post", f"/api/v1/admin/kyc/{provider}/verify", {"decision": "approve"}, "kyc.approved"),
        ("post", f"/api/v1/admin/users/{student}/deactivate", None, "user.deactivated"),
        ("post", f"/api/v1/admin/users/{student}/reactivate", None, "user.activated"),
        (
            "patch",
            f"/api/v1/admin/complaints/{complaint['id']}",
            {"status": "closed", "note": "ok"},
            "complaint.closed",
        ),
    ]
    for method, url, body, action in actions:
        r = await api.request(method.upper(), url, headers=h, json=body)
        assert r.status_code == 200, (url, r.text)
        rows = audit_rows(db, action)
        assert len(rows) == 1, action
        actor, before, after = rows[0]
        assert actor == admin
        assert before is not None, action
        assert after is not None, action
        assert before != after, action
    trail = await api.get("/api/v1/admin/audit", headers=h, params={"actor": str(admin)})
    assert [i["action"] for i in trail.json()["items"]] == [a[3] for a in actions][::-1]
    by_entity = await api.get(
        "/api/v1/admin/audit", headers=h, params={"entity": f"review:{review['id']}"}
    )
    assert [i["action"] for i in by_entity.json()["items"]] == ["review.hidden"]
    first = await api.get(
        "/api/v1/admin/audit", headers=h, params={"actor": str(admin), "limit": 2}
    )
    rest = await api.get(
        "/api/v1/admin/audit",
        headers=h,
        params={"actor": str(admin), "limit": 10, "cursor": first.json()["next_cursor"]},
    )
    assert len(first.json()["items"]) + len(rest.json()["items"]) == len(actions)
    future = await api.get(
        "/api/v1/admin/audit", headers=h, params={"from": "2100-01-01T00:00:00Z"}
    )
    assert future.json()["items"] == []


ADMIN_ROUTES = [
    ("GET", "/api/v1/admin/users"), ("POST", "/api/v1/admin/users/{id}/deactivate"),
    ("POST", "/api/v1/admin/users/{id}/reactivate"), ("POST", "/api/v1/admin/reviews/{id}/hide"),
    ("GET", "/api/v1/admin/kyc/pending"), ("GET", "/api/v1/admin/kyc/{id}/documents"),
    ("POST", "/api/v1/admin/kyc/{id}/verify"), ("GET", "/api/v1/admin/bookings"),
    ("GET", "/api/v1/admin/complaints"), ("PATCH", "/api/v1/admin/complaints/{id}"),
    ("GET", "/api/v1/admin/audit"),
]  # fmt: skip


@pytest.mark.parametrize("role", ["student", "parent", "tutor", "coach", "mentor"])
async def test_admin_routes_refuse_other_roles(
    api: httpx.AsyncClient, db: psycopg.Connection, role: str
) -> None:
    user = create_user(db, role=role)
    for method, path in ADMIN_ROUTES:
        url = path.replace("{id}", str(user))
        r = await api.request(method, url, headers=bearer(user, role), json={})
        assert r.status_code == 403, (method, url, r.status_code)
        assert r.json()["code"] == "forbidden"
        assert (await api.request(method, url, json={})).status_code == 401


# --- session evaluations --------------------------------------------------------------------------


async def test_evaluations_are_typed_and_visible_to_the_student_and_parents(
    api: httpx.AsyncClient, db: psycopg.Connection, clock: None
) -> None:
    from tests.booking.helpers import link_child

    coach = create_provider(db, kind="coach")
    booking, student = completed_booking(db, coach)
    url = f"/api/v1/bookings/{booking}/evaluation"
    h = bearer(coach, "coach")
    quiz = {"type": "quiz", "payload": {"score": 8, "max_score": 10, "topics": ["fractions"]}}
    r = await api.post(url, headers=h, json=quiz)
    assert r.status_code == 201, r.text
    milestone = {"type": "milestone", "payload": {"title": "First talk", "achieved": True}}
    assert (await api.post(url, headers=h, json=milestone)).status_code == 201
    for bad in (
        {"type": "quiz", "payload": {"score": 11, "max_score": 10}},
        {"type": "quiz", "payload": {"summary": "wrong shape"}},
        {"type": "essay", "payload": {}},
        {"type": "feedback", "payload": {"summary": "ok", "extra": 1}},
    ):
        assert (await api.post(url, headers=h, json=bad)).status_code == 422, bad
    parent = create_user(db, role="parent")
    link_child(db, parent, student)
    for who, role in ((student, "student"), (parent, "parent"), (coach, "coach")):
        got = await api.get(f"/api/v1/bookings/{booking}/evaluations", headers=bearer(who, role))
        assert sorted(e["type"] for e in got.json()) == ["milestone", "quiz"]  # same instant
    by_type = {e["type"]: e["payload"] for e in got.json()}
    assert by_type["quiz"] == {"score": 8, "max_score": 10, "topics": ["fractions"]}
    stranger = create_user(db)
    assert (
        await api.get(
            f"/api/v1/bookings/{booking}/evaluations", headers=bearer(stranger, "student")
        )
    ).status_code == 404
    assert (await api.post(url, headers=bearer(student, "student"), json=quiz)).status_code == 403

    tutor_id = tutor(db)
    tb, _ = completed_booking(db, tutor_id, start=SLOT_START + timedelta(hours=3))
    r = await api.post(
        f"/api/v1/bookings/{tb}/evaluation", headers=bearer(tutor_id, "tutor"), json=quiz
    )
    assert r.status_code == 409
    assert r.json()["code"] == "not_coaching_program"
    cb, _ = completed_booking(db, coach, start=SLOT_START + timedelta(hours=6), status="confirmed")
    r = await api.post(f"/api/v1/bookings/{cb}/evaluation", headers=h, json=quiz)
    assert r.json()["code"] == "booking_not_completed"


# --- the storage port ------------------------------------------------------------------------------


def test_local_storage_round_trip_and_key_checks(tmp_path: Path) -> None:
    s = LocalStorage(tmp_path)
    s.put("kyc/a/b.pdf", PDF, content_type="application/pdf")
    assert s.get("kyc/a/b.pdf") == PDF
    s.delete("kyc/a/b.pdf")
    with pytest.raises(KeyError):
        s.get("kyc/a/b.pdf")
    for bad in ("../x", "/abs", "a//b", "a/../b"):
        with pytest.raises(ValueError, match="invalid storage key"):
            s.put(bad, b"x", content_type="text/plain")


def test_s3_storage_speaks_the_s3_api_through_boto3() -> None:
    """The S3 adapter's calls, checked by botocore's Stubber against the S3 model."""
    import io

    import boto3
    from botocore.response import StreamingBody
    from botocore.stub import Stubber

    client = boto3.client(
        "s3", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    )
    s = S3Storage("bucket", client=client)
    with Stubber(client) as stub:
        stub.add_response(
            "put_object",
            {},
            {"Bucket": "bucket", "Key": "kyc/u/d.png", "Body": PNG, "ContentType": "image/png"},
        )
        stub.add_response(
            "get_object",
            {"Body": StreamingBody(io.BytesIO(PNG), len(PNG))},
            {"Bucket": "bucket", "Key": "kyc/u/d.png"},
        )
        stub.add_response("delete_object", {}, {"Bucket": "bucket", "Key": "kyc/u/d.png"})
        s.put("kyc/u/d.png", PNG, content_type="image/png")
        assert s.get("kyc/u/d.png") == PNG
        s.delete("kyc/u/d.png")
        stub.assert_no_pending_responses()
