//! The wire format of a test context in headers (HTTP and Kafka alike).
//!
//! The names are Faust's, so a Rust runner and Faust services can share one wire format:
//! `LiveCheck-Test-Id`, `LiveCheck-Test-Name`, `LiveCheck-Test-Timestamp` and
//! `LiveCheck-Test-Expires`, times in ISO-8601. A fifth, `LiveCheck-Test-Signature`, carries
//! an HMAC of the other four (see [`crate::signing`]); it is optional on the wire and checked
//! by a client configured with signing keys.
//!
//! A sixth, `LiveCheck-Test-Arguments`, carries the case arguments as compact JSON (every
//! character outside printable ASCII escaped, see [`arguments_json`]), so that the arguments
//! a stimulus chose reach every service of the test. It is absent when the arguments are
//! `null`, at most [`MAX_ARGUMENTS_LEN`] bytes long, and covered by the signature when the
//! context is signed with arguments.
//!
//! A seventh, `LiveCheck-Test-Route`, carries the test's route when it has one
//! ([`TestContext::route`]): the business key that replaces the test id as the Kafka key of
//! the test's LiveCheck records. It is absent without a route and not covered by the
//! signature.
//!
//! Whatever the signing setting, a test id must be 1 to [`MAX_TEST_ID_LEN`] bytes of visible
//! ASCII, a route 1 to [`MAX_ROUTE_LEN`], and a context header may appear only once.
//!
//! The same context also travels as `livecheck.*` members of the W3C `baggage` header,
//! checked by the same rules; the LiveCheck headers win when both are there (see
//! [`crate::baggage`]).

use std::io;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde::Serialize as _;
use tracing::{debug, warn};

use crate::context::TestContext;
use crate::counters::bump;

/// Header carrying the test id.
pub const TEST_ID: &str = "LiveCheck-Test-Id";
/// Header carrying the case name.
pub const TEST_NAME: &str = "LiveCheck-Test-Name";
/// Header carrying the issue time (ISO-8601).
pub const TEST_TIMESTAMP: &str = "LiveCheck-Test-Timestamp";
/// Header carrying the expiry time (ISO-8601).
pub const TEST_EXPIRES: &str = "LiveCheck-Test-Expires";
/// Header carrying the signature of the other four (`v1;kid=<kid>;sig=<base64url>`), and
/// of the arguments too when they are signed (`v2;kid=<kid>;sig=<base64url>`).
pub const TEST_SIGNATURE: &str = "LiveCheck-Test-Signature";
/// Header carrying the case arguments as compact JSON ([`arguments_json`]); absent when they
/// are `null`.
pub const TEST_ARGUMENTS: &str = "LiveCheck-Test-Arguments";

/// Header carrying the test's route ([`TestContext::route`]); absent when it has none. Not
/// signed.
pub const TEST_ROUTE: &str = "LiveCheck-Test-Route";

/// The four required context header names, in wire order.
pub const ALL: [&str; 4] = [TEST_ID, TEST_NAME, TEST_TIMESTAMP, TEST_EXPIRES];

/// All five names: the four of [`ALL`] and [`TEST_SIGNATURE`].
pub const ALL_WITH_SIGNATURE: [&str; 5] = [
    TEST_ID,
    TEST_NAME,
    TEST_TIMESTAMP,
    TEST_EXPIRES,
    TEST_SIGNATURE,
];

/// Every context header: the five of [`ALL_WITH_SIGNATURE`], [`TEST_ROUTE`] and
/// [`TEST_ARGUMENTS`], in wire order.
pub const EVERY: [&str; 7] = [
    TEST_ID,
    TEST_NAME,
    TEST_TIMESTAMP,
    TEST_EXPIRES,
    TEST_SIGNATURE,
    TEST_ROUTE,
    TEST_ARGUMENTS,
];

/// Where [`TEST_ARGUMENTS`] is in [`EVERY`] (last).
pub(crate) const ARGUMENTS: usize = 6;

/// [`EVERY`] in lowercase, as HTTP header names are.
pub(crate) const LOWERCASE: [&str; EVERY.len()] = [
    "livecheck-test-id",
    "livecheck-test-name",
    "livecheck-test-timestamp",
    "livecheck-test-expires",
    "livecheck-test-signature",
    "livecheck-test-route",
    "livecheck-test-arguments",
];

/// Longest header value accepted, in bytes (but [`TEST_ARGUMENTS`]: [`MAX_ARGUMENTS_LEN`]).
/// Longer values are rejected, not truncated.
pub const MAX_VALUE_LEN: usize = 256;

/// Longest [`TEST_ARGUMENTS`] value sent or accepted, in bytes. Larger arguments are not
/// sent (logged and counted in [`crate::counters::ClientCounters`]
/// `arguments_not_injected`); a larger incoming value rejects the context.
pub const MAX_ARGUMENTS_LEN: usize = 4096;

/// Longest test id accepted, in bytes.
pub const MAX_TEST_ID_LEN: usize = 128;

/// Longest route accepted, in bytes ([`TestContext::route`]).
pub const MAX_ROUTE_LEN: usize = 256;

/// Why a test context in headers was rejected. The request goes on as a non-test request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    /// Some context headers are present and this one is not.
    #[error("test context header {header} is missing (the other LiveCheck headers are present)")]
    Missing {
        /// The missing header.
        header: &'static str,
    },
    /// The header is present and empty.
    #[error("test context header {header} is empty")]
    Empty {
        /// The empty header.
        header: &'static str,
    },
    /// The header value is not UTF-8.
    #[error("test context header {header} is not valid UTF-8")]
    NotUtf8 {
        /// The header.
        header: &'static str,
    },
    /// The header value is longer than [`MAX_VALUE_LEN`] ([`MAX_ARGUMENTS_LEN`] for the
    /// arguments).
    #[error("test context header {header} is {len} bytes long, more than the {max} allowed")]
    Oversized {
        /// The header.
        header: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A time header does not hold an ISO-8601 timestamp.
    #[error("test context header {header} holds {value:?}, which is not an ISO-8601 timestamp")]
    BadTimestamp {
        /// The header.
        header: &'static str,
        /// Its value.
        value: String,
    },
    /// The test expires before it was issued.
    #[error("test context expires at {expires_at} before it was issued at {issued_at}")]
    ExpiresBeforeIssued {
        /// Issue time.
        issued_at: DateTime<Utc>,
        /// Expiry time.
        expires_at: DateTime<Utc>,
    },
    /// The test id is not 1 to [`MAX_TEST_ID_LEN`] bytes of visible ASCII.
    #[error("test id {id:?} is not 1 to {max} bytes of visible ASCII ({why})", max = MAX_TEST_ID_LEN)]
    BadTestId {
        /// The id, cut to [`MAX_TEST_ID_LEN`] characters (escaped by `Debug`).
        id: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The route is not 1 to [`MAX_ROUTE_LEN`] bytes of visible ASCII.
    #[error("test route {route:?} is not 1 to {max} bytes of visible ASCII ({why})", max = MAX_ROUTE_LEN)]
    BadRoute {
        /// The route, cut to [`MAX_ROUTE_LEN`] characters (escaped by `Debug`).
        route: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The arguments header does not hold JSON.
    #[error("test context header {header} does not hold JSON: {error}", header = TEST_ARGUMENTS)]
    BadArguments {
        /// The JSON parser's message.
        error: String,
    },
    /// A context header appears more than once in one request or record.
    #[error("test context header {header} appears {count} times; it may appear once")]
    DuplicateHeader {
        /// The repeated header.
        header: &'static str,
        /// How many times it appears.
        count: usize,
    },
    /// Signing is on and the context carries no signature.
    #[error("test context {id} is not signed (signing keys are configured)")]
    Unsigned {
        /// The test id.
        id: String,
    },
    /// The signature header does not have the form `v1;kid=<kid>;sig=<base64url>`.
    #[error("the signature of test context {id} is malformed: {why}")]
    MalformedSignature {
        /// The test id.
        id: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The signature names a key id that is not configured.
    #[error("test context {id} is signed with key id {kid:?}, which is not configured")]
    UnknownKey {
        /// The test id.
        id: String,
        /// The key id the signature names.
        kid: String,
    },
    /// The context carries arguments and its signature was made without them (`v1`): the
    /// arguments were added after signing. Counted as a bad signature.
    #[error("test context {id} carries arguments that its signature (key id {kid:?}, made without arguments) does not cover: they were added after signing")]
    UnsignedArguments {
        /// The test id.
        id: String,
        /// The key id the signature names.
        kid: String,
    },
    /// The signature does not match the fields: it was made with another secret (forged) or a
    /// field changed after signing (tampered). An HMAC cannot tell the two apart.
    #[error("the signature of test context {id} (key id {kid:?}) does not match its fields: forged, or a field was changed after signing")]
    BadSignature {
        /// The test id.
        id: String,
        /// The key id the signature names.
        kid: String,
    },
    /// Signing is on and the (validly signed) context has expired.
    #[error("test context {id} expired at {expires_at}")]
    Expired {
        /// The test id.
        id: String,
        /// Its expiry.
        expires_at: DateTime<Utc>,
    },
}

impl ContextError {
    /// A short, stable name of the reason, as counted in
    /// [`crate::counters::ClientCounters`] (`contexts_rejected_<reason>`) and logged.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing { .. }
            | Self::Empty { .. }
            | Self::NotUtf8 { .. }
            | Self::BadTimestamp { .. }
            | Self::ExpiresBeforeIssued { .. } => "malformed",
            Self::Oversized { .. } => "oversized",
            Self::BadTestId { .. } => "bad_test_id",
            Self::BadRoute { .. } => "bad_route",
            Self::BadArguments { .. } => "bad_arguments",
            Self::DuplicateHeader { .. } => "duplicate_header",
            Self::Unsigned { .. } => "unsigned",
            Self::MalformedSignature { .. } => "malformed_signature",
            Self::UnknownKey { .. } => "unknown_key",
            Self::BadSignature { .. } | Self::UnsignedArguments { .. } => "bad_signature",
            Self::Expired { .. } => "expired",
        }
    }
}

/// Checks that `id` is 1 to [`MAX_TEST_ID_LEN`] bytes of visible ASCII (`0x21..=0x7E`).
pub fn check_test_id(id: &str) -> Result<(), ContextError> {
    match visible_ascii(id, MAX_TEST_ID_LEN) {
        None => Ok(()),
        Some(why) => Err(ContextError::BadTestId {
            id: id.chars().take(MAX_TEST_ID_LEN).collect(),
            why,
        }),
    }
}

/// Checks that `route` is 1 to [`MAX_ROUTE_LEN`] bytes of visible ASCII (`0x21..=0x7E`), as
/// a test id is.
pub fn check_route(route: &str) -> Result<(), ContextError> {
    match visible_ascii(route, MAX_ROUTE_LEN) {
        None => Ok(()),
        Some(why) => Err(ContextError::BadRoute {
            route: route.chars().take(MAX_ROUTE_LEN).collect(),
            why,
        }),
    }
}

/// What keeps `value` from being 1 to `max` bytes of visible ASCII, if anything.
fn visible_ascii(value: &str, max: usize) -> Option<&'static str> {
    if value.is_empty() {
        Some("it is empty")
    } else if value.len() > max {
        Some("it is too long")
    } else if !all_visible(value.as_bytes()) {
        Some("it has a space, a control or a non-ASCII character")
    } else {
        None
    }
}

/// Whether every byte of `bytes` is visible ASCII (`0x21..=0x7E`): every byte is looked at
/// (no early exit), which the compiler turns into a few vector instructions.
fn all_visible(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .fold(true, |all, b| all & (0x21..=0x7E).contains(b))
}

/// Formats a time as the headers carry it (RFC 3339, microseconds, `Z`).
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Parses an ISO-8601 time: RFC 3339 with an offset, or a naive time taken as UTC (Faust
/// sends `datetime.utcnow().isoformat()`, which has no offset).
pub fn parse_time(value: &str) -> Option<DateTime<Utc>> {
    if let Some(t) = parse_own_format(value.as_bytes()) {
        return Some(t);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|naive| naive.and_utc())
}

/// Length of a time as the headers carry it (`2020-05-01T12:30:00.123456Z`).
const TIME_LEN: usize = 27;

/// Where that format has its fixed characters, and which.
const SEPARATORS: [(usize, u8); 7] = [
    (4, b'-'),
    (7, b'-'),
    (10, b'T'),
    (13, b':'),
    (16, b':'),
    (19, b'.'),
    (26, b'Z'),
];

/// Formats `t` as [`format_time`] does, into a stack buffer (no allocation); `false` for
/// years outside 0..=9999, which are left to chrono's formatter. Digits two at a time.
fn format_time_into(t: DateTime<Utc>, buf: &mut [u8; TIME_LEN]) -> bool {
    use chrono::{Datelike, Timelike};
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    // Once: each accessor of a `DateTime` converts it to its naive local time again.
    let t = t.naive_utc();
    let (date, time) = (t.date(), t.time());
    let Ok(year) = u32::try_from(date.year()) else {
        return false;
    };
    if year > 9999 {
        return false;
    }
    let of_day = time.num_seconds_from_midnight();
    // A leap second (nanoseconds past 10⁹) stays in its second 59.
    let micros = (time.nanosecond() / 1_000).min(999_999);
    for (at, value) in [
        (0, year / 100),
        (2, year % 100),
        (5, date.month()),
        (8, date.day()),
        (11, of_day / 3_600),
        (14, of_day / 60 % 60),
        (17, (of_day % 60).min(59)),
        (20, micros / 10_000),
        (22, micros / 100 % 100),
        (24, micros % 100),
    ] {
        let pair = value as usize * 2;
        if let (Some(to), Some(digits)) = (buf.get_mut(at..at + 2), PAIRS.get(pair..pair + 2)) {
            to.copy_from_slice(digits);
        }
    }
    for (at, c) in SEPARATORS {
        buf[at] = c;
    }
    true
}

/// Calls `put(name, value)` for the four headers of `context`, in the order of [`ALL`],
/// then for [`TEST_SIGNATURE`] when the context is signed, for [`TEST_ROUTE`] when it has a
/// route, then for [`TEST_ARGUMENTS`] when its arguments travel. Without arguments it does
/// not allocate.
///
/// Arguments travel when they are not `null`, when their JSON is at most
/// [`MAX_ARGUMENTS_LEN`] bytes long (larger ones are left out: logged, at warn the first
/// time, and counted in the current task's client's `arguments_not_injected`), and when the
/// context is unsigned or its signature covers them. Arguments set after a signature made
/// without them (a service's own arguments on a context that came in without any) stay in
/// the `TestExecution` record: a verifier would reject them on the next hop.
pub fn encode_with(context: &TestContext, mut put: impl FnMut(&'static str, &str)) {
    encode_values(context, |values| {
        for &(i, value) in values {
            // Always UTF-8: the context's strings, and times in ASCII.
            if let Ok(value) = std::str::from_utf8(value) {
                put(EVERY[i], value);
            }
        }
    });
}

/// Calls `f` once with the values [`encode_with`] gives, in its order, each with the index
/// of its header in [`EVERY`] (the arguments, if any, last): what the propagators write from
/// without a name lookup. Without arguments it does not allocate.
pub(crate) fn encode_values<R>(context: &TestContext, f: impl FnOnce(&[(usize, &[u8])]) -> R) -> R {
    let (mut issued, mut expires) = ([0u8; TIME_LEN], [0u8; TIME_LEN]);
    let (issued_slow, expires_slow);
    let issued: &[u8] = if format_time_into(context.issued_at, &mut issued) {
        &issued
    } else {
        issued_slow = format_time(context.issued_at);
        issued_slow.as_bytes()
    };
    let expires: &[u8] = if format_time_into(context.expires_at, &mut expires) {
        &expires
    } else {
        expires_slow = format_time(context.expires_at);
        expires_slow.as_bytes()
    };
    let arguments = arguments_to_send(context);
    // Indexes in `EVERY`.
    let mut values = [(0, &[][..]); EVERY.len()];
    let mut n = 0;
    for value in [
        Some((0, context.id.as_bytes())),
        Some((1, context.case.as_bytes())),
        Some((2, issued)),
        Some((3, expires)),
        context.signature.as_ref().map(|s| (4, s.as_bytes())),
        context.route.as_ref().map(|r| (5, r.as_bytes())),
        arguments.as_ref().map(|a| (ARGUMENTS, a.as_bytes())),
    ]
    .into_iter()
    .flatten()
    {
        values[n] = value;
        n += 1;
    }
    f(&values[..n])
}

/// The [`TEST_ARGUMENTS`] value of `context`, if its arguments travel (see [`encode_with`]).
fn arguments_to_send(context: &TestContext) -> Option<String> {
    if context.arguments.is_null() {
        return None;
    }
    if let Some(signature) = &context.signature {
        if !crate::signing::covers_arguments(signature) {
            return None;
        }
    }
    let json = arguments_json(&context.arguments);
    if json.len() > MAX_ARGUMENTS_LEN {
        arguments_left_out(context, json.len());
        return None;
    }
    Some(json)
}

/// Counts arguments too long to travel on the current task's client and logs them: at warn
/// the first time that client counts them (or always, outside a test scope), then at debug.
fn arguments_left_out(context: &TestContext, len: usize) {
    let first = crate::context::with_current(|current| {
        let counters = current.client.counters();
        // Every thread's count: a thread counts in a stripe of its own.
        let before = counters.arguments_not_injected();
        bump(&counters.here().arguments_not_injected);
        before == 0
    });
    if first == Some(false) {
        debug!(test_id = %context.id, case = %context.case, len, max = MAX_ARGUMENTS_LEN, "test arguments too long for their header; not sent");
    } else {
        warn!(test_id = %context.id, case = %context.case, len, max = MAX_ARGUMENTS_LEN, "test arguments are too long for the {TEST_ARGUMENTS} header; the context goes on without them (counted in arguments_not_injected; further cases are logged at debug)");
    }
}

/// The canonical JSON of `arguments`, as [`TEST_ARGUMENTS`] carries it and as a signature
/// covers it: compact, object keys sorted, every character outside printable ASCII (and
/// DEL) escaped as `\uXXXX`, so that any HTTP hop takes it as it is. Parsing it and writing
/// it again gives the same text.
pub fn arguments_json(arguments: &serde_json::Value) -> String {
    let mut out = Vec::with_capacity(64);
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, AsciiFormatter);
    if arguments.serialize(&mut serializer).is_err() {
        // Writing a `Value` to memory cannot fail (its keys are strings).
        return "null".to_owned();
    }
    // Only ASCII was written.
    String::from_utf8_lossy(&out).into_owned()
}

/// Compact JSON with every character outside printable ASCII escaped.
struct AsciiFormatter;

impl serde_json::ser::Formatter for AsciiFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (at, c) in fragment.char_indices() {
            if c.is_ascii() && c != '\u{7f}' {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[start..at])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            start = at + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// Reads the [`TEST_ARGUMENTS`] value: at most [`MAX_ARGUMENTS_LEN`] bytes of UTF-8 JSON.
fn decode_arguments(raw: &[u8]) -> Result<serde_json::Value, ContextError> {
    if raw.len() > MAX_ARGUMENTS_LEN {
        return Err(ContextError::Oversized {
            header: TEST_ARGUMENTS,
            len: raw.len(),
            max: MAX_ARGUMENTS_LEN,
        });
    }
    let text = std::str::from_utf8(raw)
        .map_err(|_| ContextError::NotUtf8 {
            header: TEST_ARGUMENTS,
        })?
        .trim();
    if text.is_empty() {
        return Err(ContextError::Empty {
            header: TEST_ARGUMENTS,
        });
    }
    serde_json::from_str(text).map_err(|e| ContextError::BadArguments {
        error: e.to_string(),
    })
}

/// The four signed fields in their canonical header forms (what [`crate::signing`] signs).
pub(crate) fn encode_fields_with(context: &TestContext, mut put: impl FnMut(&'static str, &str)) {
    put(TEST_ID, &context.id);
    put(TEST_NAME, &context.case);
    for (name, t) in [
        (TEST_TIMESTAMP, context.issued_at),
        (TEST_EXPIRES, context.expires_at),
    ] {
        let mut buf = [0u8; TIME_LEN];
        let fast = format_time_into(t, &mut buf);
        match std::str::from_utf8(&buf).ok().filter(|_| fast) {
            Some(text) => put(name, text),
            None => put(name, &format_time(t)),
        }
    }
}

/// Parses exactly the format [`format_time`] writes (`2020-05-01T12:30:00.123456Z`), the
/// common case on the wire, without chrono's general parser. `None` for anything else.
fn parse_own_format(b: &[u8]) -> Option<DateTime<Utc>> {
    use chrono::{NaiveDate, NaiveTime};
    if b.len() != TIME_LEN || SEPARATORS.iter().any(|(at, c)| b[*at] != *c) {
        return None;
    }
    let num = |from: usize, len: usize| -> Option<u32> {
        b[from..from + len].iter().try_fold(0u32, |acc, d| {
            d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
        })
    };
    let date = NaiveDate::from_ymd_opt(num(0, 4)? as i32, num(5, 2)?, num(8, 2)?)?;
    let time = NaiveTime::from_hms_micro_opt(num(11, 2)?, num(14, 2)?, num(17, 2)?, num(20, 6)?)?;
    Some(date.and_time(time).and_utc())
}

/// The header values of `context`, in the order of [`ALL`], plus the signature, the route
/// and the arguments if any (see [`encode_with`]).
pub fn encode(context: &TestContext) -> Vec<(&'static str, String)> {
    let mut out = Vec::with_capacity(EVERY.len());
    encode_with(context, |name, value| out.push((name, value.to_owned())));
    out
}

/// Reads a context from headers through `get`, which returns a header's raw value by name
/// (the caller decides about case). `Ok(None)` when no LiveCheck header is present. The
/// arguments are read from [`TEST_ARGUMENTS`] (`null` without it), the route from
/// [`TEST_ROUTE`] (none without it; [`check_route`]); a signature, route or arguments header
/// without the four others is ignored.
///
/// A caller whose headers can repeat (HTTP, Kafka) uses [`decode_counted`], so that a
/// repeated context header is rejected.
pub fn decode<'a>(
    get: impl Fn(&'static str) -> Option<&'a [u8]>,
) -> Result<Option<TestContext>, ContextError> {
    decode_counted(|name| (get(name), usize::from(get(name).is_some())))
}

/// As [`decode`], with `get` returning a header's first value and how many times the header
/// appears: a context header that appears more than once rejects the context.
pub fn decode_counted<'a>(
    get: impl Fn(&'static str) -> (Option<&'a [u8]>, usize),
) -> Result<Option<TestContext>, ContextError> {
    let found = EVERY.map(get);
    decode_found(&Found {
        values: found.map(|(value, _)| value),
        counts: found.map(|(_, count)| count),
    })
}

/// The context headers of one carrier, gathered in one pass over its headers (see
/// [`index_of`]): for each header of [`EVERY`], its first value and how many times it
/// appears. Read with [`decode_found`].
#[derive(Debug, Default)]
pub(crate) struct Found<'a> {
    values: [Option<&'a [u8]>; EVERY.len()],
    counts: [usize; EVERY.len()],
}

impl<'a> Found<'a> {
    /// Notes one value of header `EVERY[index]`.
    pub(crate) fn add(&mut self, index: usize, value: &'a [u8]) {
        if let (Some(first), Some(count)) = (self.values.get_mut(index), self.counts.get_mut(index))
        {
            if *count == 0 {
                *first = Some(value);
            }
            *count += 1;
        }
    }

    /// Whether no context header was seen.
    pub(crate) fn is_empty(&self) -> bool {
        self.counts.iter().all(|count| *count == 0)
    }
}

/// The index in [`EVERY`] of the context header named `name` (ASCII case ignored), if it is
/// one: its length picks the one name it can be, then one comparison (exact first: a
/// sender writes the names as [`EVERY`] spells them, HTTP in lowercase). No allocation.
pub(crate) fn index_of(name: &[u8]) -> Option<usize> {
    let i = match name.len() {
        17 => 0,
        19 => 1,
        22 => 3,
        20 => 5,
        // Timestamp, Signature and Arguments: told apart by their first letter.
        24 => match name.get(15)?.to_ascii_lowercase() {
            b't' => 2,
            b's' => 4,
            b'a' => ARGUMENTS,
            _ => return None,
        },
        _ => return None,
    };
    let (canonical, lowercase) = (EVERY[i].as_bytes(), LOWERCASE[i].as_bytes());
    (same(name, lowercase) || same(name, canonical) || name.eq_ignore_ascii_case(canonical))
        .then_some(i)
}

/// `a == b` for names of 16 to 24 bytes, in three word comparisons (no call to `memcmp`).
fn same(a: &[u8], b: &[u8]) -> bool {
    let word = |s: &[u8], at: usize| {
        s.get(at..at + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            .map(u64::from_ne_bytes)
    };
    let last = a.len().saturating_sub(8);
    a.len() == b.len()
        && (16..=24).contains(&a.len())
        && word(a, 0) == word(b, 0)
        && word(a, 8) == word(b, 8)
        && word(a, last) == word(b, last)
}

/// Reads a context from the headers gathered in `found`, as [`decode_counted`] does.
pub(crate) fn decode_found(found: &Found<'_>) -> Result<Option<TestContext>, ContextError> {
    if let Some((name, count)) = EVERY.iter().zip(found.counts).find(|(_, count)| *count > 1) {
        return Err(ContextError::DuplicateHeader {
            header: name,
            count,
        });
    }
    let [id, name, timestamp, expires, signature, route, arguments] = found.values;
    let values = [id, name, timestamp, expires];
    if values.iter().all(Option::is_none) {
        return Ok(None);
    }
    let mut text = [""; 4];
    let mut times = [None; 4];
    for (i, (name, value)) in ALL.iter().zip(values).enumerate() {
        let raw = value.ok_or(ContextError::Missing { header: name })?;
        // A time as LiveCheck writes it (the usual case) is read from its bytes: it is
        // UTF-8, with nothing to trim.
        times[i] = (i >= 2).then(|| parse_own_format(raw)).flatten();
        if times[i].is_none() {
            text[i] = checked_text(name, raw)?;
        }
    }
    let time = |i: usize, header: &'static str| {
        times[i]
            .or_else(|| parse_time(text[i]))
            .ok_or_else(|| ContextError::BadTimestamp {
                header,
                value: text[i].to_owned(),
            })
    };
    let issued_at = time(2, TEST_TIMESTAMP)?;
    let expires_at = time(3, TEST_EXPIRES)?;
    if expires_at < issued_at {
        return Err(ContextError::ExpiresBeforeIssued {
            issued_at,
            expires_at,
        });
    }
    check_test_id(text[0])?;
    let signature = match signature {
        None => None,
        Some(raw) => {
            let text = checked_text(TEST_SIGNATURE, raw)?;
            Some(text.to_owned())
        }
    };
    let route = match route {
        None => None,
        Some(raw) => {
            let text = checked_text(TEST_ROUTE, raw)?;
            check_route(text)?;
            Some(text.to_owned())
        }
    };
    let arguments = match arguments {
        None => serde_json::Value::Null,
        Some(raw) => decode_arguments(raw)?,
    };
    Ok(Some(TestContext {
        id: text[0].to_owned(),
        case: text[1].to_owned(),
        issued_at,
        expires_at,
        arguments,
        signature,
        traceparent: None,
        route,
    }))
}

/// A header value as trimmed, non-empty UTF-8 of at most [`MAX_VALUE_LEN`] bytes.
fn checked_text<'a>(name: &'static str, raw: &'a [u8]) -> Result<&'a str, ContextError> {
    if raw.len() > MAX_VALUE_LEN {
        return Err(ContextError::Oversized {
            header: name,
            len: raw.len(),
            max: MAX_VALUE_LEN,
        });
    }
    let s = std::str::from_utf8(raw).map_err(|_| ContextError::NotUtf8 { header: name })?;
    // Most values have nothing to trim: no need to look for Unicode white space then.
    let visible = |b: Option<&u8>| b.is_some_and(|b| (0x21..=0x7E).contains(b));
    let s = if visible(raw.first()) && visible(raw.last()) {
        s
    } else {
        s.trim()
    };
    if s.is_empty() {
        return Err(ContextError::Empty { header: name });
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;

    fn decode_map(
        map: &HashMap<&'static str, Vec<u8>>,
    ) -> Result<Option<TestContext>, ContextError> {
        decode(|name| map.get(name).map(Vec::as_slice))
    }

    fn encoded() -> (TestContext, HashMap<&'static str, Vec<u8>>) {
        let ctx = TestContext::new("orders.place_order", Duration::from_secs(60));
        let map = encode(&ctx)
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        (ctx, map)
    }

    #[test]
    fn round_trip() {
        let (ctx, map) = encoded();
        let back = decode_map(&map).unwrap().unwrap();
        assert_eq!(back.id, ctx.id);
        assert_eq!(back.case, ctx.case);
        // Microsecond precision on the wire.
        assert_eq!(
            back.issued_at.timestamp_micros(),
            ctx.issued_at.timestamp_micros()
        );
        assert_eq!(
            back.expires_at.timestamp_micros(),
            ctx.expires_at.timestamp_micros()
        );
    }

    #[test]
    fn no_headers_is_no_test() {
        assert_eq!(decode_map(&HashMap::new()), Ok(None));
    }

    #[test]
    fn partial_context_names_the_missing_header() {
        let (_, mut map) = encoded();
        map.remove(TEST_NAME);
        assert_eq!(
            decode_map(&map),
            Err(ContextError::Missing { header: TEST_NAME })
        );
    }

    #[test]
    fn bad_timestamp_is_rejected() {
        let (_, mut map) = encoded();
        map.insert(TEST_TIMESTAMP, b"yesterday".to_vec());
        let err = decode_map(&map).unwrap_err();
        assert_eq!(
            err.to_string(),
            "test context header LiveCheck-Test-Timestamp holds \"yesterday\", which is not an ISO-8601 timestamp"
        );
    }

    #[test]
    fn oversized_and_non_utf8_values_are_rejected() {
        let (_, mut map) = encoded();
        map.insert(TEST_ID, vec![b'x'; MAX_VALUE_LEN + 1]);
        assert!(matches!(
            decode_map(&map),
            Err(ContextError::Oversized {
                header: TEST_ID,
                ..
            })
        ));
        map.insert(TEST_ID, vec![0xff, 0xfe]);
        assert_eq!(
            decode_map(&map),
            Err(ContextError::NotUtf8 { header: TEST_ID })
        );
        map.insert(TEST_ID, b"  ".to_vec());
        assert_eq!(
            decode_map(&map),
            Err(ContextError::Empty { header: TEST_ID })
        );
    }

    #[test]
    fn the_stack_formatter_matches_chrono() {
        for t in [
            "2020-05-01T12:30:00.123456Z",
            "1999-12-31T23:59:59.000001Z",
            "2026-01-02T03:04:05Z",
        ] {
            let t = parse_time(t).unwrap();
            let mut buf = [0u8; TIME_LEN];
            assert!(format_time_into(t, &mut buf));
            assert_eq!(&buf[..], format_time(t).as_bytes());
            assert_eq!(parse_own_format(format_time(t).as_bytes()), Some(t));
        }
    }

    #[test]
    fn the_stack_formatter_matches_chrono_from_year_0_to_9999() {
        use chrono::TimeZone as _;
        let mut buf = [0u8; TIME_LEN];
        let first = Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap().timestamp();
        let last = Utc
            .with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
            .unwrap()
            .timestamp();
        // Every day's first and last second of the years around 1970 and 2000, then
        // spread over the whole range, with odd microseconds.
        let days = (-800..12_000).flat_map(|d: i64| [d * 86_400, d * 86_400 + 86_399]);
        let spread = (0..20_000).map(|i: i64| first + (last - first) / 20_000 * i + i * 7);
        for secs in days.chain(spread).chain([first, last]) {
            let t = Utc.timestamp_opt(secs, 123_456_789).unwrap();
            assert!(format_time_into(t, &mut buf), "{t}");
            assert_eq!(&buf[..], format_time(t).as_bytes(), "{t}");
        }
        for outside in [first - 1, last + 1] {
            let t = Utc.timestamp_opt(outside, 0).unwrap();
            assert!(!format_time_into(t, &mut buf), "{t}");
        }
        // A leap second.
        let leap = Utc.timestamp_opt(last, 1_999_999_999).unwrap();
        assert!(format_time_into(leap, &mut buf));
        assert_eq!(&buf[..], b"9999-12-31T23:59:59.999999Z");
    }

    #[test]
    fn faust_naive_timestamps_are_utc() {
        let t = parse_time("2020-05-01T12:30:00.123456").unwrap();
        assert_eq!(format_time(t), "2020-05-01T12:30:00.123456Z");
        let t = parse_time("2020-05-01T14:30:00+02:00").unwrap();
        assert_eq!(format_time(t), "2020-05-01T12:30:00.000000Z");
    }

    #[test]
    fn test_ids_are_1_to_128_visible_ascii_bytes() {
        let (_, mut map) = encoded();
        for good in ["a".repeat(128), "order-1!~".to_owned()] {
            map.insert(TEST_ID, good.clone().into_bytes());
            assert_eq!(decode_map(&map).unwrap().unwrap().id, good);
        }
        for bad in [
            "a".repeat(129),
            "has space".to_owned(),
            "tab\there".to_owned(),
            "caf\u{e9}".to_owned(),
            "nul\0".to_owned(),
        ] {
            map.insert(TEST_ID, bad.clone().into_bytes());
            let err = decode_map(&map).unwrap_err();
            assert_eq!(err.reason(), "bad_test_id", "{bad:?}: {err}");
        }
        // The same rule for a TestExecution record.
        let mut json = serde_json::to_value(TestContext::new("c", Duration::from_secs(9))).unwrap();
        json["id"] = "two words".into();
        let err = serde_json::from_value::<TestContext>(json).unwrap_err();
        assert!(err.to_string().contains("visible ASCII"), "{err}");
    }

    #[test]
    fn a_repeated_context_header_is_rejected() {
        let (_, map) = encoded();
        for repeated in EVERY {
            let decoded = decode_counted(|name| {
                let value = map.get(name).map(Vec::as_slice).or(Some(b"v1;kid=k;sig=x"));
                (value, if name == repeated { 2 } else { 1 })
            });
            assert_eq!(
                decoded,
                Err(ContextError::DuplicateHeader {
                    header: repeated,
                    count: 2
                })
            );
        }
    }

    #[test]
    fn old_records_without_a_signature_still_parse() {
        let json = r#"{"id":"t1","case":"c","issued_at":"2020-05-01T12:30:00Z","expires_at":"2020-05-01T13:30:00Z"}"#;
        let context: TestContext = serde_json::from_str(json).unwrap();
        assert_eq!(context.signature, None);
        assert!(!serde_json::to_string(&context)
            .unwrap()
            .contains("signature"));
    }

    fn with_arguments(arguments: serde_json::Value) -> HashMap<&'static str, Vec<u8>> {
        let ctx =
            TestContext::new("orders.place_order", Duration::from_secs(60)).arguments(arguments);
        encode(&ctx)
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect()
    }

    #[test]
    fn arguments_round_trip_as_canonical_ascii_json() {
        let arguments = serde_json::json!({
            "side": "sell",
            // Read back one unit in the last place off without serde_json's
            // `float_roundtrip`, which the workspace turns on.
            "amount": 975.9989724159291,
            "note": "caf\u{e9} \u{1f600} \u{7f}\n\"q\"",
            "a": [1, -2, 18446744073709551615u64, 1.7976931348623157e308, 5e-324, null, true],
        });
        let map = with_arguments(arguments.clone());
        let raw = std::str::from_utf8(&map[TEST_ARGUMENTS]).unwrap();
        assert_eq!(
            raw,
            r#"{"a":[1,-2,18446744073709551615,1.7976931348623157e+308,5e-324,null,true],"amount":975.9989724159291,"note":"caf\u00e9 \ud83d\ude00 \u007f\n\"q\"","side":"sell"}"#
        );
        assert!(raw.bytes().all(|b| (0x20..0x7f).contains(&b)), "{raw}");
        let back = decode_map(&map).unwrap().unwrap();
        assert_eq!(back.arguments, arguments);
        // Parsing and writing again gives the same text: what a signature covers.
        assert_eq!(arguments_json(&back.arguments), raw);
    }

    #[test]
    fn null_arguments_send_no_header() {
        let (ctx, map) = encoded();
        assert!(ctx.arguments.is_null());
        assert_eq!(map.len(), 4);
        assert!(!map.contains_key(TEST_ARGUMENTS));
        assert_eq!(
            decode_map(&map).unwrap().unwrap().arguments,
            serde_json::Value::Null
        );
    }

    #[test]
    fn arguments_too_long_are_not_sent() {
        // The JSON of a string of n characters is n + 2 bytes long.
        let fits = with_arguments(serde_json::json!("x".repeat(MAX_ARGUMENTS_LEN - 2)));
        assert_eq!(fits[TEST_ARGUMENTS].len(), MAX_ARGUMENTS_LEN);
        let too_long = with_arguments(serde_json::json!("x".repeat(MAX_ARGUMENTS_LEN - 1)));
        assert!(!too_long.contains_key(TEST_ARGUMENTS));
        // The context itself still travels.
        assert_eq!(too_long.len(), 4);
        assert!(decode_map(&too_long).unwrap().unwrap().arguments.is_null());
    }

    #[test]
    fn bad_incoming_arguments_are_rejected() {
        let (_, mut map) = encoded();
        map.insert(TEST_ARGUMENTS, vec![b'1'; MAX_ARGUMENTS_LEN + 1]);
        let err = decode_map(&map).unwrap_err();
        assert_eq!(
            err,
            ContextError::Oversized {
                header: TEST_ARGUMENTS,
                len: MAX_ARGUMENTS_LEN + 1,
                max: MAX_ARGUMENTS_LEN
            }
        );
        assert_eq!(err.reason(), "oversized");
        assert_eq!(
            err.to_string(),
            "test context header LiveCheck-Test-Arguments is 4097 bytes long, more than the 4096 allowed"
        );

        map.insert(TEST_ARGUMENTS, br#"{"side":"sell""#.to_vec());
        let err = decode_map(&map).unwrap_err();
        assert_eq!(err.reason(), "bad_arguments");
        assert_eq!(
            err.to_string(),
            "test context header LiveCheck-Test-Arguments does not hold JSON: EOF while parsing an object at line 1 column 14"
        );
        // Nesting too deep for the parser is an error, not a stack overflow.
        map.insert(TEST_ARGUMENTS, "[".repeat(MAX_ARGUMENTS_LEN).into_bytes());
        assert_eq!(decode_map(&map).unwrap_err().reason(), "bad_arguments");
        map.insert(TEST_ARGUMENTS, vec![0xff, b'1']);
        assert_eq!(
            decode_map(&map),
            Err(ContextError::NotUtf8 {
                header: TEST_ARGUMENTS
            })
        );
        map.insert(TEST_ARGUMENTS, b" ".to_vec());
        assert_eq!(
            decode_map(&map),
            Err(ContextError::Empty {
                header: TEST_ARGUMENTS
            })
        );
        // A good value decodes; `null` is the same as no header.
        map.insert(TEST_ARGUMENTS, br#" {"side":"buy"} "#.to_vec());
        assert_eq!(
            decode_map(&map).unwrap().unwrap().arguments,
            serde_json::json!({"side": "buy"})
        );
        map.insert(TEST_ARGUMENTS, b"null".to_vec());
        assert!(decode_map(&map).unwrap().unwrap().arguments.is_null());
    }

    #[test]
    fn arguments_set_after_a_signature_without_them_are_not_sent() {
        let mut ctx = TestContext::new("c", Duration::from_secs(60));
        ctx.signature = Some("v1;kid=k1;sig=AAAA".into());
        let ctx = ctx.arguments(serde_json::json!("sell"));
        let names: Vec<_> = encode(&ctx).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ALL_WITH_SIGNATURE);
        let mut ctx = ctx;
        ctx.signature = Some("v2;kid=k1;sig=AAAA".into());
        let names: Vec<_> = encode(&ctx).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [ALL_WITH_SIGNATURE.as_slice(), &[TEST_ARGUMENTS]].concat()
        );
    }

    #[test]
    fn a_route_round_trips_and_no_route_sends_no_header() {
        let (ctx, map) = encoded();
        assert!(!map.contains_key(TEST_ROUTE));
        assert_eq!(decode_map(&map).unwrap().unwrap().route, None);

        let ctx = ctx.route("user-7");
        let list = encode(&ctx);
        let names: Vec<_> = list.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, [ALL.as_slice(), &[TEST_ROUTE]].concat());
        let map: HashMap<_, _> = list.into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
        assert_eq!(map[TEST_ROUTE], b"user-7");
        let back = decode_map(&map).unwrap().unwrap();
        assert_eq!(back.route.as_deref(), Some("user-7"));
        assert_eq!(back.partition_key(), "user-7");
        assert_eq!(back.id, ctx.id);

        // Wire order with everything: the route before the arguments.
        let mut all = ctx.arguments(serde_json::json!("sell"));
        all.signature = Some("v2;kid=k1;sig=AAAA".into());
        let names: Vec<_> = encode(&all).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, EVERY);
        // A route header without the four others is ignored.
        let alone = HashMap::from([(TEST_ROUTE, b"user-7".to_vec())]);
        assert_eq!(decode_map(&alone), Ok(None));
    }

    #[test]
    fn routes_are_1_to_256_visible_ascii_bytes() {
        let (_, mut map) = encoded();
        for good in ["r".repeat(MAX_ROUTE_LEN), "account:42/eu~".to_owned()] {
            map.insert(TEST_ROUTE, good.clone().into_bytes());
            assert_eq!(decode_map(&map).unwrap().unwrap().route, Some(good));
        }
        for bad in ["two words", "tab\there", "caf\u{e9}", "nul\0"] {
            map.insert(TEST_ROUTE, bad.as_bytes().to_vec());
            let err = decode_map(&map).unwrap_err();
            assert_eq!(err.reason(), "bad_route", "{bad:?}: {err}");
        }
        map.insert(TEST_ROUTE, b"two words".to_vec());
        assert_eq!(
            decode_map(&map).unwrap_err().to_string(),
            "test route \"two words\" is not 1 to 256 bytes of visible ASCII (it has a space, a control or a non-ASCII character)"
        );
        map.insert(TEST_ROUTE, vec![b'r'; MAX_ROUTE_LEN + 1]);
        assert_eq!(
            decode_map(&map),
            Err(ContextError::Oversized {
                header: TEST_ROUTE,
                len: MAX_ROUTE_LEN + 1,
                max: MAX_VALUE_LEN
            })
        );
        map.insert(TEST_ROUTE, b" ".to_vec());
        assert_eq!(
            decode_map(&map),
            Err(ContextError::Empty { header: TEST_ROUTE })
        );
        map.insert(TEST_ROUTE, vec![0xff]);
        assert_eq!(
            decode_map(&map),
            Err(ContextError::NotUtf8 { header: TEST_ROUTE })
        );
        // The check on its own, as a trigger applies it to a key.
        assert!(check_route("user-7").is_ok());
        assert_eq!(check_route("").unwrap_err().reason(), "bad_route");
        assert_eq!(
            check_route(&"r".repeat(MAX_ROUTE_LEN + 1))
                .unwrap_err()
                .reason(),
            "bad_route"
        );
    }

    #[test]
    fn header_names_are_matched_by_their_bytes_ignoring_case() {
        for (i, name) in EVERY.iter().enumerate() {
            for name in [
                name.to_string(),
                name.to_ascii_lowercase(),
                name.to_ascii_uppercase(),
            ] {
                assert_eq!(index_of(name.as_bytes()), Some(i), "{name}");
            }
        }
        assert_eq!(EVERY[ARGUMENTS], TEST_ARGUMENTS);
        for (name, lowercase) in EVERY.iter().zip(LOWERCASE) {
            assert_eq!(name.to_ascii_lowercase(), lowercase);
        }
        for other in [
            "",
            "LiveCheck-Test-",
            "LiveCheck-Test-I",
            "LiveCheck-Test-Idx",
            "LiveCheck-Test-Timestamps",
            "LiveCheck-Other-Id",
            "LiveCheck-Test-Id\0",
            "baggage",
            "traceparent",
        ] {
            assert_eq!(index_of(other.as_bytes()), None, "{other:?}");
        }
    }

    #[test]
    fn the_values_are_the_headers_in_wire_order() {
        let mut all = TestContext::new("c", Duration::from_secs(60))
            .route("user-7")
            .arguments(serde_json::json!("sell"));
        all.signature = Some("v2;kid=k1;sig=AAAA".into());
        let listed = encode(&all);
        encode_values(&all, |values| {
            assert_eq!(values.len(), listed.len());
            for (&(i, value), (name, listed)) in values.iter().zip(&listed) {
                assert_eq!((EVERY[i], value), (*name, listed.as_bytes()));
            }
        });
        // Years the stack formatter leaves to chrono.
        all.expires_at = chrono::NaiveDate::from_ymd_opt(12020, 5, 1)
            .unwrap()
            .and_hms_opt(12, 30, 0)
            .unwrap()
            .and_utc();
        encode_values(&all, |values| {
            assert_eq!(values[3], (3, format_time(all.expires_at).as_bytes()));
        });
    }

    #[test]
    fn expiry_before_issue_is_rejected() {
        let (_, mut map) = encoded();
        map.insert(TEST_EXPIRES, b"2000-01-01T00:00:00Z".to_vec());
        assert!(matches!(
            decode_map(&map),
            Err(ContextError::ExpiresBeforeIssued { .. })
        ));
    }
}
