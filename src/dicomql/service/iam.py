"""``getIamPolicy``, ``setIamPolicy`` and ``testIamPermissions`` on datasets and DICOM stores.

Policies are kept and answered as Google's IAM does (version, bindings, auditConfigs, an etag
that changes on every write and guards concurrent changes), but the embedded service does not
enforce them: ``--auth-token`` is its only access control, so ``testIamPermissions`` grants
every well-formed permission asked about (docs/service.md, "IAM policies").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from anyio import to_thread
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dicomql.service.bodies import json_body, query_params
from dicomql.service.context import service_of
from dicomql.service.datasets import require_dataset
from dicomql.service.dicom_stores import require_dicom_store
from dicomql.service.errors import Aborted, InvalidArgument
from dicomql.service.validation import parse_update_mask, validate_path_ids
from dicomql.store import iam

_DATASETS = "healthcare.projects.locations.datasets."
_STORES = _DATASETS + "dicomStores."
_VERSIONS = (0, 1, 3)
# IAM member forms (https://cloud.google.com/iam/docs/principal-identifiers).
_MEMBER = re.compile(
    r"^(allUsers|allAuthenticatedUsers"
    r"|(user|serviceAccount|group|domain|deleted:user|deleted:serviceAccount|deleted:group"
    r"|principal|principalSet):.+)$"
)
_PERMISSION = re.compile(r"^healthcare\.[A-Za-z]+\.[A-Za-z]+$")
_MASKABLE = ("bindings", "etag", "auditConfigs")

Owner = dict[str, int]  # {"dataset_pk": …} or {"store_pk": …}


def _owner_of(request: Request) -> Callable[[Connection], Owner]:
    params = request.path_params
    project, location, dataset = params["project"], params["location"], params["dataset"]
    if "dicom_store" in params:
        store_id = params["dicom_store"]
        return lambda conn: {
            "store_pk": require_dicom_store(conn, project, location, dataset, store_id).pk
        }
    return lambda conn: {"dataset_pk": require_dataset(conn, project, location, dataset).pk}


def _method(request: Request, name: str) -> str:
    return (_STORES if "dicom_store" in request.path_params else _DATASETS) + name


def _answer(stored: iam.StoredPolicy, requested_version: int = 3) -> dict[str, Any]:
    policy = stored.policy
    if _conditional(policy.get("bindings", [])) and requested_version < 3:
        raise InvalidArgument(
            "The policy has conditional role bindings; request it with"
            " options.requestedPolicyVersion=3."
        )
    return {**policy, "etag": stored.etag}


def _conditional(bindings: list[dict[str, Any]]) -> bool:
    return any("condition" in binding for binding in bindings)


async def get_iam_policy(request: Request) -> Response:
    validate_path_ids(request.path_params)
    query = query_params(request, _method(request, "getIamPolicy"))
    version = query.get("options.requestedPolicyVersion", 0)
    if version not in _VERSIONS:
        raise InvalidArgument(
            f"Invalid requested policy version {version}; valid versions are 0, 1 and 3."
        )
    owner_of = _owner_of(request)
    index = service_of(request).index

    def read() -> dict[str, Any]:
        with index.connect() as conn:
            return _answer(iam.read_policy(conn, **owner_of(conn)), version)

    return JSONResponse(await to_thread.run_sync(read))


def _checked_policy(policy: dict[str, Any], current: dict[str, Any], mask: list[str]) -> Any:
    """The policy to store: ``current`` with the masked fields of ``policy``, checked."""
    merged = dict(current)
    if "bindings" in mask:
        merged.pop("bindings", None)
        bindings = []
        for number, binding in enumerate(policy.get("bindings", [])):
            role = binding.get("role", "")
            if not role.startswith("roles/"):
                raise InvalidArgument(
                    f"Invalid role {role!r} in policy.bindings[{number}]: roles are named"
                    " roles/{role}."
                )
            members = binding.get("members", [])
            for member in members:
                if not _MEMBER.match(member):
                    raise InvalidArgument(
                        f"Invalid member {member!r} in policy.bindings[{number}]: expected"
                        " user:, serviceAccount:, group:, domain:, principal:, principalSet:,"
                        " allUsers or allAuthenticatedUsers."
                    )
            if members:  # IAM drops bindings without members
                bindings.append({**binding, "members": sorted(set(members))})
        if bindings:
            merged["bindings"] = bindings
    if "auditConfigs" in mask:
        merged.pop("auditConfigs", None)
        if policy.get("auditConfigs"):
            merged["auditConfigs"] = policy["auditConfigs"]
    version = policy.get("version", 0)
    if version not in _VERSIONS:
        raise InvalidArgument(f"Invalid policy version {version}; valid versions are 0, 1 and 3.")
    if _conditional(merged.get("bindings", [])):
        if version != 3:
            raise InvalidArgument(
                "Conditional role bindings need policy version 3 (policy.version)."
            )
        merged["version"] = 3
    elif merged.get("bindings") or merged.get("auditConfigs"):
        merged["version"] = 1
    else:
        merged.pop("version", None)
    return merged


async def set_iam_policy(request: Request) -> Response:
    validate_path_ids(request.path_params)
    query_params(request, _method(request, "setIamPolicy"))
    body = await json_body(
        request, "SetIamPolicyRequest", "", service_of(request).config.max_request_bytes
    )
    policy = body.get("policy") or {}
    # AIP-161 mask over the Policy; Google's default is "bindings, etag".
    mask = parse_update_mask(body.get("updateMask") or "bindings,etag", _MASKABLE)
    expected = policy.get("etag") if "etag" in mask else None
    owner_of = _owner_of(request)
    index = service_of(request).index

    def write() -> dict[str, Any]:
        try:
            with index.begin() as conn:
                owner = owner_of(conn)
                current = iam.read_policy(conn, **owner).policy
                stored = iam.replace_policy(
                    conn, _checked_policy(policy, current, mask), expected or None, **owner
                )
        except IntegrityError:
            stored = None  # another server created the first policy at the same moment
        if stored is None:
            raise Aborted(
                "There were concurrent policy changes. Please retry the whole read-modify-write"
                " with exponential backoff."
            )
        return _answer(stored)

    return JSONResponse(await to_thread.run_sync(write))


async def test_iam_permissions(request: Request) -> Response:
    validate_path_ids(request.path_params)
    query_params(request, _method(request, "testIamPermissions"))
    body = await json_body(
        request, "TestIamPermissionsRequest", "", service_of(request).config.max_request_bytes
    )
    permissions: list[str] = body.get("permissions", [])
    for permission in permissions:
        if not _PERMISSION.match(permission):
            raise InvalidArgument(
                f"Permission {permission!r} is not valid for this resource; permissions are"
                " named healthcare.{collection}.{verb} and take no wildcards."
            )
    owner_of = _owner_of(request)
    index = service_of(request).index

    def check() -> None:
        with index.connect() as conn:
            owner_of(conn)  # 404 for a missing resource

    await to_thread.run_sync(check)
    granted = list(dict.fromkeys(permissions))  # not enforced: the caller holds them all
    return JSONResponse({"permissions": granted} if granted else {})
