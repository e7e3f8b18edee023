from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Path, Query

from app.api.deps import AnalyticsSession
from app.api.responses import errors_doc
from app.errors import BadRequest
from app.queries.analytics import AnalyticsRepository, utc_days
from app.schemas import INT64_MAX, DailyRevenueRead, RevenueReport

router = APIRouter(tags=["analytics"])

LocationId = Annotated[int, Path(gt=0, le=INT64_MAX)]
MAX_REPORT_DAYS = 731


@router.get(
    "/locations/{location_id}/revenue",
    response_model=RevenueReport,
    responses=errors_doc(404, not_found="The location does not exist"),
)
async def get_location_revenue(
    location_id: LocationId,
    session: AnalyticsSession,
    start: Annotated[dt.date, Query(description="First day (UTC), inclusive")],
    end: Annotated[dt.date, Query(description="Last day (UTC), inclusive")],
) -> RevenueReport:
    """Per UTC day of payment: completed payments (revenue) and refunded ones, apart."""
    if end < start:
        raise BadRequest("end must not be before start")
    if (end - start).days >= MAX_REPORT_DAYS:
        raise BadRequest(f"the range spans at most {MAX_REPORT_DAYS} days")
    if end >= dt.date.max:
        raise BadRequest("end is out of range")
    days = await AnalyticsRepository(session).daily_revenue(location_id, *utc_days(start, end))
    return RevenueReport(
        location_id=location_id,
        start=start,
        end=end,
        days=[DailyRevenueRead.model_validate(d) for d in days],
    )
