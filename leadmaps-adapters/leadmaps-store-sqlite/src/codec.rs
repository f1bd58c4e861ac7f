//! How trait values are written to and read from columns. Reading is strict: a value this code
//! would never write is a [`Corrupt`] row, not a guess.

use leadmaps_core::crypto::Purpose;
use leadmaps_core::ingest::RejectReason;
use leadmaps_core::tenancy::{Region, WorkspaceId};
use leadmaps_core::{Error, Result};
use rusqlite::Row;
use rusqlite::types::Type;
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use crate::error::Corrupt;

/// A workspace id as its 16 UUID bytes: BLOB order is then `Uuid`'s `Ord`.
pub(crate) fn id_bytes(id: WorkspaceId) -> [u8; 16] {
    *id.as_uuid().as_bytes()
}

/// An instant as unix nanoseconds. Exact in both directions; the offset is normalised to UTC,
/// which `OffsetDateTime`'s equality ignores anyway.
///
/// # Errors
/// [`Error::Invalid`] outside 1677-09-21 ..= 2262-04-11, the range of an `i64` of nanoseconds.
pub(crate) fn unix_nanos(at: OffsetDateTime) -> Result<i64> {
    i64::try_from(at.unix_timestamp_nanos())
        .map_err(|_| Error::invalid("timestamp outside the years 1678 to 2261"))
}

/// An instant as a query bound: like [`unix_nanos`], but clamped to the stored range instead of
/// refused, since no stored instant lies outside it.
pub(crate) fn bound_nanos(at: OffsetDateTime) -> i64 {
    let nanos = at.unix_timestamp_nanos();
    i64::try_from(nanos).unwrap_or(if nanos < 0 { i64::MIN } else { i64::MAX })
}

/// An audit time (whole microseconds, see [`leadmaps_core::audit::audit_time`]) as unix
/// microseconds: exact for every such time, and for any year.
///
/// # Errors
/// [`Error::Invalid`] for a time with a sub-microsecond part, which no sealed record or signed
/// checkpoint has: keeping it would change what the hash or MAC covers.
pub(crate) fn unix_micros(at: OffsetDateTime) -> Result<i64> {
    let nanos = at.unix_timestamp_nanos();
    if nanos % 1_000 != 0 {
        return Err(Error::invalid("audit time is not in whole microseconds"));
    }
    i64::try_from(nanos / 1_000).map_err(|_| Error::invalid("audit time out of range"))
}

/// The Julian day number of 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i32 = OffsetDateTime::UNIX_EPOCH.date().to_julian_day();

/// A UTC day as days since 1970-01-01: exact, and ordered as `Date` is.
pub(crate) fn day_number(day: Date) -> i64 {
    i64::from(day.to_julian_day()) - i64::from(UNIX_EPOCH_JULIAN_DAY)
}

pub(crate) fn corrupt(column: usize, kind: Type, what: &'static str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, kind, Box::new(Corrupt(what)))
}

/// Reads a workspace id column.
pub(crate) fn get_id(row: &Row<'_>, column: usize) -> rusqlite::Result<WorkspaceId> {
    let bytes: [u8; 16] = row.get(column)?;
    Ok(WorkspaceId::from_uuid(Uuid::from_bytes(bytes)))
}

/// Reads an instant column.
pub(crate) fn get_time(row: &Row<'_>, column: usize) -> rusqlite::Result<OffsetDateTime> {
    let nanos: i64 = row.get(column)?;
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
        .map_err(|_| corrupt(column, Type::Integer, "timestamp"))
}

/// Reads an audit time column (unix microseconds).
pub(crate) fn get_micros(row: &Row<'_>, column: usize) -> rusqlite::Result<OffsetDateTime> {
    let micros: i64 = row.get(column)?;
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .map_err(|_| corrupt(column, Type::Integer, "audit time"))
}

/// Reads a region column.
pub(crate) fn get_region(row: &Row<'_>, column: usize) -> rusqlite::Result<Region> {
    let name: String = row.get(column)?;
    [Region::Eu, Region::Us]
        .into_iter()
        .find(|region| region.as_str() == name)
        .ok_or_else(|| corrupt(column, Type::Text, "region"))
}

/// Reads a 0-or-1 flag column.
pub(crate) fn get_flag(row: &Row<'_>, column: usize) -> rusqlite::Result<bool> {
    match row.get::<_, i64>(column)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(corrupt(column, Type::Integer, "flag")),
    }
}

/// Reads a purpose column.
pub(crate) fn get_purpose(row: &Row<'_>, column: usize) -> rusqlite::Result<Purpose> {
    let name: String = row.get(column)?;
    Purpose::parse(&name).ok_or_else(|| corrupt(column, Type::Text, "purpose"))
}

/// Reads a TEXT or NULL column in place, without copying it.
pub(crate) fn get_text<'r>(row: &'r Row<'_>, column: usize) -> rusqlite::Result<Option<&'r str>> {
    row.get_ref(column)?
        .as_str_or_null()
        .map_err(|_| corrupt(column, Type::Text, "text"))
}

/// Reads a day column.
pub(crate) fn get_day(row: &Row<'_>, column: usize) -> rusqlite::Result<Date> {
    let days: i64 = row.get(column)?;
    days.checked_add(i64::from(UNIX_EPOCH_JULIAN_DAY))
        .and_then(|julian| i32::try_from(julian).ok())
        .and_then(|julian| Date::from_julian_day(julian).ok())
        .ok_or_else(|| corrupt(column, Type::Integer, "day"))
}

/// Reads a reason column. The code is parsed as core's own serde name of the reason (its stable
/// snake_case code), so a reason added to core later is read without a change here; a code that
/// does not come back as itself is corrupt.
pub(crate) fn get_reason(row: &Row<'_>, column: usize) -> rusqlite::Result<RejectReason> {
    let code: String = row.get(column)?;
    serde_json::from_value::<RejectReason>(serde_json::Value::String(code.clone()))
        .ok()
        .filter(|reason| reason.code() == code)
        .ok_or_else(|| corrupt(column, Type::Text, "reject reason"))
}

#[cfg(test)]
mod tests {
    use time::Duration;

    use super::*;

    #[test]
    fn instants_round_trip_to_the_nanosecond() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let at = OffsetDateTime::UNIX_EPOCH
            + Duration::days(20_500)
            + Duration::nanoseconds(123_456_789);
        let back = conn
            .query_row("SELECT ?1", [unix_nanos(at).unwrap()], |row| {
                get_time(row, 0)
            })
            .unwrap();
        assert_eq!(back, at);
        let before_epoch = OffsetDateTime::UNIX_EPOCH - Duration::nanoseconds(1);
        assert_eq!(unix_nanos(before_epoch).unwrap(), -1);
        let far = OffsetDateTime::UNIX_EPOCH + Duration::days(365 * 300);
        assert_eq!(
            unix_nanos(far).unwrap_err().kind(),
            leadmaps_core::ErrorKind::Invalid
        );
    }

    #[test]
    fn audit_times_round_trip_in_whole_microseconds() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for at in [
            OffsetDateTime::UNIX_EPOCH + Duration::days(20_500) + Duration::microseconds(123_456),
            OffsetDateTime::UNIX_EPOCH - Duration::microseconds(1),
            // Beyond the nanosecond columns' range: microseconds cover any year.
            OffsetDateTime::UNIX_EPOCH + Duration::days(365 * 3_000),
        ] {
            let back = conn
                .query_row("SELECT ?1", [unix_micros(at).unwrap()], |row| {
                    get_micros(row, 0)
                })
                .unwrap();
            assert_eq!(back, at);
        }
        assert_eq!(
            unix_micros(OffsetDateTime::UNIX_EPOCH + Duration::nanoseconds(1_001))
                .unwrap_err()
                .kind(),
            leadmaps_core::ErrorKind::Invalid,
            "never rounded"
        );
        assert!(
            conn.query_row("SELECT ?1", [i64::MAX], |row| get_micros(row, 0))
                .is_err()
        );
    }

    #[test]
    fn days_round_trip_and_keep_their_order() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let epoch = OffsetDateTime::UNIX_EPOCH.date();
        assert_eq!(day_number(epoch), 0);
        let shown: String = conn
            .query_row(
                "SELECT date(?1 * 86400, 'unixepoch')",
                [day_number(epoch + Duration::days(20_500))],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(shown, (epoch + Duration::days(20_500)).to_string());
        for day in [Date::MIN, epoch - Duration::days(1), epoch, Date::MAX] {
            let back = conn
                .query_row("SELECT ?1", [day_number(day)], |row| get_day(row, 0))
                .unwrap();
            assert_eq!(back, day);
        }
        assert!(day_number(epoch - Duration::days(1)) < day_number(epoch));
        assert!(
            conn.query_row("SELECT ?1", [i64::MAX], |row| get_day(row, 0))
                .is_err()
        );
    }

    #[test]
    fn reasons_round_trip_by_code() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for reason in [
            RejectReason::NotAnObject,
            RejectReason::UnsupportedField,
            RejectReason::InvalidField,
            RejectReason::NameMissing,
            RejectReason::NameTooLong,
            RejectReason::UrlMissing,
            RejectReason::UrlInvalid,
            RejectReason::UrlTooLong,
            RejectReason::DomainMissing,
            RejectReason::DomainUnknown,
            RejectReason::TooManyProps,
            RejectReason::PropKeyInvalid,
            RejectReason::PropValueTooLong,
            RejectReason::PropValueInvalid,
            RejectReason::RevenueInvalid,
            RejectReason::IdInvalid,
            RejectReason::WrongRegion,
            RejectReason::Bot,
            RejectReason::ReferrerSpam,
            RejectReason::BlockedIp,
        ] {
            let back = conn
                .query_row("SELECT ?1", [reason.code()], |row| get_reason(row, 0))
                .unwrap();
            assert_eq!(back, reason);
        }
        for bad in ["Bot", "bot ", "martian", ""] {
            assert!(
                conn.query_row("SELECT ?1", [bad], |row| get_reason(row, 0))
                    .is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn query_bounds_clamp_instead_of_failing() {
        let far = OffsetDateTime::UNIX_EPOCH + Duration::days(365 * 300);
        let long_ago = OffsetDateTime::UNIX_EPOCH - Duration::days(365 * 300);
        assert_eq!(bound_nanos(far), i64::MAX);
        assert_eq!(bound_nanos(long_ago), i64::MIN);
        let at = OffsetDateTime::UNIX_EPOCH + Duration::nanoseconds(5);
        assert_eq!(bound_nanos(at), 5);
    }

    #[test]
    fn unknown_names_are_corrupt_not_guessed() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        assert!(
            conn.query_row("SELECT 'EU'", [], |row| get_region(row, 0))
                .is_err()
        );
        assert!(
            conn.query_row("SELECT 'mars'", [], |row| get_purpose(row, 0))
                .is_err()
        );
        assert!(
            conn.query_row("SELECT x'0102'", [], |row| get_id(row, 0))
                .is_err()
        );
        assert_eq!(
            conn.query_row("SELECT 'us'", [], |row| get_region(row, 0))
                .unwrap(),
            Region::Us
        );
        for (value, flag) in [(0, false), (1, true)] {
            assert_eq!(
                conn.query_row("SELECT ?1", [value], |row| get_flag(row, 0))
                    .unwrap(),
                flag
            );
        }
        assert!(
            conn.query_row("SELECT 2", [], |row| get_flag(row, 0))
                .is_err()
        );
    }
}
