"""/api/v1 routes (being written)."""

from fastapi import APIRouter

router = APIRouter()
