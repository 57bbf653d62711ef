"""How EWS requests write instants: xs:dateTime, naive (wall time in the request's zone), `Z`,
or with an offset. One reader, shared by the free/busy and the suggestions windows."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo

from cas.errors import InvalidValue

_DATETIME = re.compile(
    r"^(-?\d{4,})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(Z|[+-]\d{2}:\d{2})?$"
)


def parse_datetime(text: str, where: str, tz: tzinfo) -> datetime:
    """An xs:dateTime as an aware UTC datetime; naive values are wall times in `tz`."""
    match = _DATETIME.match(text.strip())
    if match is None:
        raise InvalidValue(f"{where} must be an xs:dateTime, got {text!r}.")
    year, month, day, hour, minute, second, fraction, zone_text = match.groups()
    try:
        next_day = hour == "24" and minute == "00" and second == "00" and not fraction
        value = datetime(
            int(year),
            int(month),
            int(day),
            0 if next_day else int(hour),
            int(minute),
            int(second),
            int((fraction or "0")[:6].ljust(6, "0")),
        )
        if next_day:
            value += timedelta(days=1)
        if zone_text is None:
            aware = value.replace(tzinfo=tz)
        elif zone_text == "Z":
            aware = value.replace(tzinfo=UTC)
        else:
            sign = -1 if zone_text[0] == "-" else 1
            offset = timedelta(hours=int(zone_text[1:3]), minutes=int(zone_text[4:6]))
            aware = value.replace(tzinfo=timezone(sign * offset))
        return aware.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidValue(f"{where} is not a valid date and time ({text!r}): {exc}.") from None


__all__ = ["parse_datetime"]
