//! A user as clients see it, on the REST API and in the socket's frames alike:
//! DRF's rendering of the POC's model (key order, timestamps).

use prost_types::Timestamp;
use serde::Serialize;
use users_proto::v1 as pb;

/// A user as the REST API and the socket frames show it (key order as the POC's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserJson {
    pub id: i64,
    pub first_name: String,
    pub last_name: String,
    pub created_at: String,
    pub updated_at: String,
    pub version: i64,
}

impl From<&pb::User> for UserJson {
    fn from(user: &pb::User) -> UserJson {
        UserJson {
            id: user.id,
            first_name: user.first_name.clone().unwrap_or_default(),
            last_name: user.last_name.clone().unwrap_or_default(),
            created_at: user.create_time.as_ref().map(rfc3339).unwrap_or_default(),
            updated_at: user.update_time.as_ref().map(rfc3339).unwrap_or_default(),
            version: user.version,
        }
    }
}

/// A timestamp as DRF renders a `DateTimeField` in UTC: RFC 3339, six fractional
/// digits, `Z` (e.g. `2026-01-13T10:00:00.123456Z`).
pub fn rfc3339(ts: &Timestamp) -> String {
    let micros = (ts.nanos.clamp(0, 999_999_999) / 1_000) as u32;
    let days = ts.seconds.div_euclid(86_400);
    let secs = ts.seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`), so no calendar crate is needed for one format.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_render_with_six_digits_and_z() {
        let ts = Timestamp {
            seconds: 1_768_298_400,
            nanos: 123_456_789,
        };
        assert_eq!(rfc3339(&ts), "2026-01-13T10:00:00.123456Z");
        let epoch = Timestamp {
            seconds: 0,
            nanos: 0,
        };
        assert_eq!(rfc3339(&epoch), "1970-01-01T00:00:00.000000Z");
        let leap = Timestamp {
            seconds: 951_782_400,
            nanos: 0,
        };
        assert_eq!(rfc3339(&leap), "2000-02-29T00:00:00.000000Z");
        let before = Timestamp {
            seconds: -1,
            nanos: 999_999_000,
        };
        assert_eq!(rfc3339(&before), "1969-12-31T23:59:59.999999Z");
    }
}
