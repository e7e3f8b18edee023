from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.api.contract import ContractRoute, PathId
from app.api.deps import HotAnalytics
from app.api.reads import RevenueQuery, no_location, revenue_body
from app.api.responses import errors_doc
from app.db.models import BarbershopLocation
from app.db.sessions import Reader
from app.queries import exists
from app.queries.analytics import AnalyticsRepository, utc_days
from app.schemas import DailyRevenueRead, RevenueReport

router = APIRouter(tags=["analytics"], route_class=ContractRoute)

LocationId = PathId


@router.get(
    "/locations/{location_id}/revenue",
    response_model=RevenueReport,
    responses=errors_doc(404, not_found="The location does not exist"),
)
async def get_location_revenue(
    location_id: LocationId, query: Annotated[RevenueQuery, Query()], reads: HotAnalytics
) -> RevenueReport | Response:
    """Per UTC day of payment: completed payments (revenue) and refunded ones, apart."""
    if isinstance(reads, Reader):
        body = await revenue_body(reads, location_id, query)
        return Response(body, media_type="application/json")
    start, end = query.report_days()
    days = await AnalyticsRepository(reads).daily_revenue(location_id, *utc_days(start, end))
    if not days and not await exists(reads, BarbershopLocation, location_id):
        raise no_location(location_id)
    return RevenueReport(
        location_id=location_id,
        start=start,
        end=end,
        days=[DailyRevenueRead.model_validate(d) for d in days],
    )
