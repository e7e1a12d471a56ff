"""Helpers of the SQL tests: the seed pages' SQL blocks and a recording transport handler."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

SEEDS = Path("/work/shared/seeds")
NEW_PAGE = SEEDS / "000_e20372cf4c8310ee.txt"
OLD_PAGE = SEEDS / "001_0bac61d22e99ae0a.txt"


def sql_blocks(page: Path) -> list[str]:
    return re.findall(r"```sql\n(.*?)```", page.read_text(), flags=re.DOTALL)


def seed_key(sql: str) -> str:
    """'select:get', 'select:list', 'insert', 'update', 'delete' or 'exec:<method>'."""
    words = sql.split()
    if words[0] == "EXEC":
        return "exec:" + words[1].rsplit(".", 1)[1]
    if words[0] == "SELECT":
        return "select:get" if "dicomStoresId" in sql else "select:list"
    return words[0].lower()


SEED = {seed_key(block): block for block in sql_blocks(NEW_PAGE)}


@dataclass
class Call:
    method: str
    path: str
    query: list[tuple[str, str]]
    body: Any
    content_type: str | None


@dataclass
class Recorder:
    """Records every request; answers from ``responses`` keyed by (HTTP method, path)."""

    calls: list[Call] = field(default_factory=list)
    responses: dict[tuple[str, str], Callable[[httpx.Request], httpx.Response]] = field(
        default_factory=dict
    )

    def handle(self, request: httpx.Request) -> httpx.Response:
        content = request.read()
        content_type = request.headers.get("content-type")
        body: Any = None
        if content and content_type == "application/json":
            body = json.loads(content)
        elif content:
            body = content
        self.calls.append(
            Call(
                request.method,
                request.url.raw_path.decode().split("?", 1)[0],
                list(request.url.params.multi_items()),
                body,
                content_type,
            )
        )
        answer = self.responses.get((request.method, request.url.path))
        if answer is not None:
            return answer(request)
        return httpx.Response(200, json={})
