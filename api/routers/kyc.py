"""KYC documents: a provider uploads identity documents (multipart), checked by size and
by magic bytes, stored through the storage port (`core.storage`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile, status

from admin import service
from admin.errors import PayloadTooLarge
from admin.schemas import KycDocType, KycDocumentOut
from api.deps import NowDep, ProviderUser, SessionDep
from api.errors import problem_responses
from core.settings import get_settings
from core.storage import Storage, get_storage

router = APIRouter(tags=["kyc"])

StorageDep = Annotated[Storage, Depends(get_storage)]


@router.post(
    "/profiles/me/kyc-documents",
    status_code=status.HTTP_201_CREATED,
    response_model=KycDocumentOut,
    summary="Upload an identity document (PDF, JPEG or PNG; multipart)",
    responses=problem_responses(400, 401, 403, 404, 413, 415, 422),
)
async def upload_document(
    user: ProviderUser,
    session: SessionDep,
    storage: StorageDep,
    now: NowDep,
    type: Annotated[KycDocType, Form(description="What the document is")],
    file: Annotated[UploadFile, File(description="The document: PDF, JPEG or PNG")],
) -> KycDocumentOut:
    """The type is read from the content's magic bytes, not the part's Content-Type:
    415 `unsupported_media_type` otherwise; 413 `payload_too_large` above
    `KYC_MAX_BYTES` (10 MiB); 404 `provider_not_found` before the profile exists."""
    limit = get_settings().kyc_max_bytes
    if file.size is not None and file.size > limit:
        raise PayloadTooLarge(f"The file exceeds {limit} bytes.", max_bytes=limit)
    data = await file.read(limit + 1)
    out = await service.upload_kyc_document(
        session, storage, actor=user, doc_type=type, data=data, now=now
    )
    await session.commit()
    return out


@router.get(
    "/profiles/me/kyc-documents",
    response_model=list[KycDocumentOut],
    summary="The provider's uploaded identity documents",
    responses=problem_responses(400, 401, 403),
)
async def my_documents(user: ProviderUser, session: SessionDep) -> list[KycDocumentOut]:
    """Oldest first (metadata only; the bytes stay in storage)."""
    return await service.kyc_documents(session, user_id=user.id)
