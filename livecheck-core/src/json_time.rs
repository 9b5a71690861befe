//! Times in JSON, written exactly as chrono's serde writes them (RFC 3339 in UTC with `Z`,
//! and 0, 3, 6 or 9 fractional digits, as few as hold the nanoseconds), without going
//! through `core::fmt`: a report carries a dozen times, and chrono's formatter, one
//! `write_char` per character, took half of a report's encoding (perf, live bench). Read
//! back as chrono's `Deserialize` reads them, with a fast path for that form: chrono's parser
//! took two to three percent of the runner's CPU in the live bench (a signal's `sent_at`, a
//! test record's `issued_at` and `expires_at`).

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserializer, Serializer};

/// The longest time this writes: `2020-05-01T12:30:00.123456789Z`.
const MAX_LEN: usize = 30;

const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

/// Writes `t` into `buf`, returning its length; `None` for years outside 0..=9999, which
/// are left to chrono.
fn write(t: &DateTime<Utc>, buf: &mut [u8; MAX_LEN]) -> Option<usize> {
    let t = t.naive_utc();
    let (date, time) = (t.date(), t.time());
    let year = u32::try_from(date.year()).ok().filter(|y| *y <= 9999)?;
    let of_day = time.num_seconds_from_midnight();
    let mut seconds = of_day % 60;
    let mut nanos = time.nanosecond();
    // A leap second is written as second 60, as chrono does.
    if nanos >= 1_000_000_000 {
        seconds += 1;
        nanos -= 1_000_000_000;
    }
    let put = |buf: &mut [u8; MAX_LEN], at: usize, value: u32| {
        let pair = value as usize % 100 * 2;
        if let (Some(to), Some(digits)) = (buf.get_mut(at..at + 2), PAIRS.get(pair..pair + 2)) {
            to.copy_from_slice(digits);
        }
    };
    put(buf, 0, year / 100);
    put(buf, 2, year % 100);
    put(buf, 5, date.month());
    put(buf, 8, date.day());
    put(buf, 11, of_day / 3_600);
    put(buf, 14, of_day / 60 % 60);
    put(buf, 17, seconds);
    for (at, c) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')] {
        buf[at] = c;
    }
    let (fraction, digits) = if nanos == 0 {
        (0, 0)
    } else if nanos % 1_000_000 == 0 {
        (nanos / 1_000_000, 3)
    } else if nanos % 1_000 == 0 {
        (nanos / 1_000, 6)
    } else {
        (nanos, 9)
    };
    let mut len = 19;
    if digits > 0 {
        buf[19] = b'.';
        let mut rest = fraction;
        for at in (20..20 + digits).rev() {
            buf[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        len = 20 + digits;
    }
    buf[len] = b'Z';
    Some(len + 1)
}

/// `serialize_with` for a `DateTime<Utc>` field.
pub(crate) fn serialize<S: Serializer>(
    t: &DateTime<Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; MAX_LEN];
    match write(t, &mut buf) {
        // Digits and separators only: always UTF-8.
        Some(len) => match std::str::from_utf8(buf.get(..len).unwrap_or_default()) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => serde::Serialize::serialize(t, serializer),
        },
        None => serde::Serialize::serialize(t, serializer),
    }
}

/// `serialize_with` for an `Option<DateTime<Utc>>` field.
pub(crate) fn serialize_option<S: Serializer>(
    t: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => serialize(t, serializer),
        None => serializer.serialize_none(),
    }
}

/// `deserialize_with` for a `DateTime<Utc>` field: a timestamp as chrono's `Deserialize`
/// reads it, with a fast path for the form chrono writes (`2026-11-26T01:48:31.123456789Z`).
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<DateTime<Utc>, D::Error> {
    struct Time;
    impl serde::de::Visitor<'_> for Time {
        type Value = DateTime<Utc>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an RFC 3339 timestamp")
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
            if let Some(at) = utc_time(text) {
                return Ok(at);
            }
            // What chrono's own `Deserialize` does.
            text.parse::<DateTime<chrono::FixedOffset>>()
                .map(|at| at.with_timezone(&Utc))
                .map_err(E::custom)
        }
    }
    deserializer.deserialize_str(Time)
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`; `None` for anything else (left to chrono).
pub(crate) fn utc_time(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    if b.len() < 20 || b.len() > 30 || *b.last()? != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        b[range].iter().try_fold(0u32, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let nanos = match b.len() {
        20 => 0,
        n if b[19] == b'.' && n >= 22 => {
            let digits = n - 21;
            num(20..n - 1)? * 10u32.pow(9 - digits as u32)
        }
        _ => return None,
    };
    let date = chrono::NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    let time =
        chrono::NaiveTime::from_hms_nano_opt(num(11..13)?, num(14..16)?, num(17..19)?, nanos)?;
    Some(date.and_time(time).and_utc())
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, TimeDelta};
    use rand::{Rng, SeedableRng};

    use super::*;

    fn ours(t: &DateTime<Utc>) -> String {
        serialize(t, serde_json::value::Serializer)
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn chrono(t: &DateTime<Utc>) -> String {
        serde_json::to_value(t)
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// `y-m-d 23:59:59` plus `nanos` (past 10⁹: a leap second).
    fn day_end(y: i32, m: u32, d: u32, nanos: u32) -> DateTime<Utc> {
        NaiveDate::from_ymd_opt(y, m, d)
            .and_then(|day| day.and_hms_nano_opt(23, 59, 59, nanos))
            .unwrap()
            .and_utc()
    }

    #[test]
    fn writes_what_chrono_writes() {
        let base = day_end(2026, 11, 26, 0);
        let mut cases = vec![
            base,
            base + TimeDelta::milliseconds(120),
            base + TimeDelta::microseconds(1),
            base + TimeDelta::microseconds(123_450),
            base + TimeDelta::nanoseconds(1),
            base + TimeDelta::nanoseconds(999_999_999),
            DateTime::UNIX_EPOCH,
            day_end(0, 1, 1, 0),
            day_end(9999, 12, 31, 999_999_999),
            // Leap seconds: chrono writes second 60.
            day_end(2016, 12, 31, 1_000_000_000),
            day_end(2016, 12, 31, 1_500_000_000),
            // Outside 0..=9999: chrono's own.
            day_end(10_000, 1, 1, 0),
            day_end(-1, 1, 1, 0),
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20_000 {
            let secs = rng.random_range(-62_000_000_000i64..253_000_000_000);
            let nanos = match rng.random_range(0..4) {
                0 => 0,
                1 => rng.random_range(0..1_000) * 1_000_000,
                2 => rng.random_range(0..1_000_000) * 1_000,
                _ => rng.random_range(0..1_000_000_000),
            };
            cases.push(DateTime::from_timestamp(secs, nanos).unwrap());
        }
        for t in &cases {
            assert_eq!(ours(t), chrono(t), "{t:?}");
        }
        let t = Some(base);
        assert_eq!(
            serialize_option(&t, serde_json::value::Serializer).unwrap(),
            serde_json::to_value(t).unwrap()
        );
        assert_eq!(
            serialize_option(&None, serde_json::value::Serializer).unwrap(),
            serde_json::Value::Null
        );
    }
}
