"""Budget windows: calendar days and months, in UTC or a named time zone.

A window is half-open, ``[start, end)``; both ends are aware UTC datetimes, so
they compare with ledger timestamps whatever zone the budget counts in.  A
``label`` names the window in storage keys (``2026-12-03`` or ``2026-12``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Period = Literal["day", "month"]


@dataclass(frozen=True)
class Window:
    """One day or month of one time zone, as UTC instants."""

    period: Period
    timezone: str
    label: str
    start: datetime
    end: datetime

    @property
    def reset(self) -> datetime:
        """When the budget starts afresh: the end of this window."""
        return self.end

    def seconds_left(self, now: datetime) -> float:
        return max(0.0, (self.end - now).total_seconds())


def zone(name: str) -> ZoneInfo:
    """The zone named ``name`` (``UTC``, ``Europe/Berlin``); ValueError if unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown time zone {name!r}; use an IANA name such as UTC or Europe/Berlin"
        ) from exc


def window_at(now: datetime, period: Period, timezone: str = "UTC") -> Window:
    """The window of ``period`` in ``timezone`` that contains ``now`` (aware)."""
    tz = zone(timezone)
    local = now.astimezone(tz)
    if period == "day":
        first = datetime(local.year, local.month, local.day, tzinfo=tz)
        following = _next_day(first, tz)
        label = first.strftime("%Y-%m-%d")
    else:
        first = datetime(local.year, local.month, 1, tzinfo=tz)
        following = _next_month(first, tz)
        label = first.strftime("%Y-%m")
    return Window(period, timezone, label, first.astimezone(UTC), following)


def _next_day(first: datetime, tz: ZoneInfo) -> datetime:
    """Local midnight after ``first``: date arithmetic, not 24 hours (DST)."""
    day = (first + timedelta(days=1)).date()
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)


def _next_month(first: datetime, tz: ZoneInfo) -> datetime:
    year, month = first.year, first.month + 1
    if month == 13:
        year, month = year + 1, 1
    return datetime(year, month, 1, tzinfo=tz).astimezone(UTC)


def http_date(when: datetime) -> str:
    """``when`` as RFC 3339 UTC with a ``Z`` (the reset header's format)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
