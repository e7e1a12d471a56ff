"""Opaque page tokens and page sizes for the list methods (AIP-158).

A token carries the sort key of the last item returned (keyset paging) and a digest of the
request it belongs to, so any process sharing the index can continue a listing and a token is
refused when reused with a different parent or filter. Nothing is held in memory between pages.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

from dicomql.service.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def page_size(
    requested: int | None, *, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE
) -> int:
    """The page size to use: ``default`` when unset or 0, clamped to ``maximum``.

    AIP-158: a page size above the maximum is coerced to it; a negative one is an error.

    Raises:
        InvalidArgument: a negative page size.
    """
    if requested is None or requested == 0:
        return default
    if requested < 0:
        raise InvalidArgument(f"pageSize must not be negative, got {requested}.")
    return min(requested, maximum)


def _digest(context: str) -> str:
    return hashlib.sha256(context.encode()).hexdigest()[:16]


def encode_token(after: str | int, context: str) -> str:
    """A token that resumes a listing after the item whose sort key is ``after``.

    Args:
        after: the sort key of the last item on the page just returned.
        context: what identifies the listing (parent name, filter), so that the token can be
            checked against the request that presents it.
    """
    payload = json.dumps({"a": after, "c": _digest(context)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_token(token: str | None, context: str) -> str | int | None:
    """The sort key to resume after, or None for the first page.

    Raises:
        InvalidArgument: the token is malformed or was issued for a different listing.
    """
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload = json.loads(raw)
        after = payload["a"]
        digest = payload["c"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument(f'Invalid page token "{token}".') from exc
    # The sort key goes into an index query: refuse what no real key can be (NUL breaks
    # PostgreSQL text, integers beyond int64 break SQLite) rather than fail in the database.
    valid_key = (isinstance(after, str) and "\x00" not in after and len(after) <= 256) or (
        isinstance(after, int) and not isinstance(after, bool) and -(2**63) <= after < 2**63
    )
    if not valid_key or digest != _digest(context):
        raise InvalidArgument(
            f'Invalid page token "{token}": it does not belong to this request; list again'
            " without a page token, or with the same parent and filter."
        )
    return after
