"""Response bodies of the API."""

from __future__ import annotations

from pydantic import BaseModel


class Item(BaseModel):
    item_id: str
    score: float
    reason: str


class UserRecommendations(BaseModel):
    user_id: str
    version: str
    fallback: bool
    items: list[Item]


class SimilarItems(BaseModel):
    item_id: str
    version: str
    items: list[Item]
