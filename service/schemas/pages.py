"""The envelope every list answers in: one page of rows and where the next page starts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

from pydantic import BaseModel, Field


class Page(BaseModel):
    count: int = Field(description="rows that match the filters, on every page together")
    skip: int = Field(description="rows skipped before this page")
    limit: int = Field(description="the most rows a page holds")
    next_skip: int | None = Field(
        description="the skip of the next page (pass it as ?skip=); null on the last page"
    )

    @classmethod
    def of(cls, data: Sequence[Any], count: int, skip: int, limit: int) -> Self:
        """The page of ``data`` (rows ``skip`` onwards of ``count``) in this envelope."""
        more = skip + limit < count
        return cls(  # type: ignore[call-arg]  # data: each subclass's own field
            data=list(data),
            count=count,
            skip=skip,
            limit=limit,
            next_skip=skip + limit if more else None,
        )
