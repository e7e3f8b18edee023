from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.api.contract import ContractRoute, PathId
from app.api.deps import AnalyticsStatements
from app.api.reads import JSON, RevenueQuery, revenue_body
from app.api.responses import errors_doc
from app.schemas import RevenueReport

router = APIRouter(tags=["analytics"], route_class=ContractRoute)

LocationId = PathId


@router.get(
    "/locations/{location_id}/revenue",
    response_model=RevenueReport,
    responses=errors_doc(404, not_found="The location does not exist"),
)
async def get_location_revenue(
    location_id: LocationId, query: Annotated[RevenueQuery, Query()], db: AnalyticsStatements
) -> Response:
    """Per UTC day of payment: completed payments (revenue) and refunded ones, apart."""
    return Response(await revenue_body(db, location_id, query), media_type=JSON)
