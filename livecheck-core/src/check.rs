//! Why a check did not pass, and the macros that say so.
//!
//! Expectations return `Result<(), CheckError>`. A wait that fails returns its
//! [`CheckError`] as is; the macros fail the check with a message ([`crate::ensure!`],
//! [`crate::ensure_eq!`], [`crate::ensure_ne!`], [`crate::ensure_matches!`],
//! [`crate::bail!`]); and `?` turns any other error (`serde_json`, `reqwest`, `std::io`,
//! yours) into [`CheckError::Error`], verdict `ERROR`, with its whole source chain in the
//! message:
//!
//! ```
//! use livecheck_core::{ensure_eq, Case, Run, Signal};
//!
//! /// Where the service wrote the order's receipt.
//! static RECEIPT: Signal<String> = Signal::new("orders.place_order", "receipt_written");
//!
//! let case = Case::new("orders.place_order").expect(|run: Run, side: String| async move {
//!     let path = run.wait(&RECEIPT).await?; // TIMEOUT if it does not come
//!     let text = std::fs::read_to_string(&path)?; // an io::Error is ERROR
//!     let receipt: serde_json::Value = serde_json::from_str(&text)?; // so is a JSON error
//!     ensure_eq!(receipt["side"], side, "the receipt has another side");
//!     Ok(())
//! });
//! # let _ = case;
//!
//! // What such an error reads like in the report:
//! use livecheck_core::CheckError;
//! let json: CheckError = serde_json::from_str::<u32>(r#""x""#).unwrap_err().into();
//! assert_eq!(
//!     json,
//!     CheckError::Error(r#"invalid type: string "x", expected u32 at line 1 column 3"#.into())
//! );
//! let io: CheckError = std::fs::read_to_string("/no/such/receipt").unwrap_err().into();
//! assert_eq!(io.to_string(), "No such file or directory (os error 2)");
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

/// Why a check did not pass. Return it from expectations: `?` on [`Run::wait`] or on any
/// error (which becomes [`CheckError::Error`]), or the macros ([`crate::ensure!`] and its
/// siblings, [`crate::bail!`]).
///
/// It is not itself a [`std::error::Error`], so that every error can convert into it (as
/// `anyhow::Error` does); its `Display` is the message the report shows.
///
/// [`Run::wait`]: crate::Run::wait
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// A contract was violated: verdict `FAIL`.
    Failed(String),
    /// A step did not arrive in time: verdict `TIMEOUT`. In time means, by the records'
    /// own timestamps (event time), within the timeout of the previous step (the first
    /// step: of the test record).
    Timeout {
        /// The step that did not come in time (`shipped[item-1]` for a per-item step).
        signal: String,
        /// The timeout it had (the run's deadline, when that was what ran out).
        waited: Duration,
        /// The last step that did come.
        last_step: Option<String>,
        /// Set when the step did come, but after its deadline: by how much.
        late_by: Option<Duration>,
        /// What else is known: how many of the wanted occurrences came, how many came
        /// that did not match the condition.
        detail: Option<String>,
        /// Set when the run's deadline ran out ([`crate::Case::deadline`]), not the step's
        /// own timeout.
        run_deadline: bool,
    },
    /// The check itself errored: verdict `ERROR`.
    Error(String),
    /// A business rule was broken ([`crate::ensure_invariant!`]): verdict `FAIL`, and the
    /// report's [`crate::Report::invariant`] names the rule, the key and the values.
    Invariant(Box<crate::report::Invariant>),
}

impl CheckError {
    /// A broken business rule: `rule` ("open sell exposure <= limit"), the key it was
    /// checked for, and the values it was checked on.
    pub fn invariant<'a>(
        rule: impl Into<String>,
        key: impl Into<String>,
        values: impl IntoIterator<Item = (&'a str, serde_json::Value)>,
    ) -> Self {
        CheckError::Invariant(Box::new(crate::report::Invariant {
            rule: rule.into(),
            key: key.into(),
            values: values
                .into_iter()
                .map(|(k, v)| (k.to_owned(), capped(v)))
                .collect(),
        }))
    }
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::Failed(message) | CheckError::Error(message) => f.write_str(message),
            CheckError::Timeout { .. } => f.write_str(&timeout_message(self)),
            CheckError::Invariant(invariant) => invariant.fmt(f),
        }
    }
}

/// Longest JSON of one invariant value kept in a report; a longer one is replaced by the
/// start of its JSON as a string, ending in `…`.
pub(crate) const MAX_INVARIANT_VALUE_LEN: usize = 512;

fn capped(value: serde_json::Value) -> serde_json::Value {
    let json = value.to_string();
    if json.len() <= MAX_INVARIANT_VALUE_LEN {
        return value;
    }
    let mut cut = MAX_INVARIANT_VALUE_LEN;
    while !json.is_char_boundary(cut) {
        cut -= 1;
    }
    serde_json::Value::String(format!("{}…", &json[..cut]))
}

/// Any error is [`CheckError::Error`] (verdict `ERROR`): its message followed by those of
/// its sources, `outer: inner: root`.
impl<E: StdError + Send + Sync + 'static> From<E> for CheckError {
    fn from(error: E) -> Self {
        CheckError::Error(chain(&error))
    }
}

/// `error: source: source's source ...`, leaving out a source whose message the text
/// already ends with (errors that print their source in their own message).
fn chain(error: &dyn StdError) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

fn timeout_message(error: &CheckError) -> String {
    let CheckError::Timeout {
        signal,
        waited,
        last_step,
        late_by,
        detail,
        run_deadline,
    } = error
    else {
        return String::new();
    };
    let mut message = match (run_deadline, late_by) {
        (true, Some(late)) => format!(
            "signal `{signal}` came {late:?} after the run's deadline ({waited:?} after the test was issued)"
        ),
        (true, None) => format!(
            "signal `{signal}` did not arrive before the run's deadline ({waited:?} after the test was issued)"
        ),
        (false, _) => {
            let since = last_step
                .as_deref()
                .map_or("the start of the test (no step arrived)".to_owned(), |s| {
                    format!("the previous step `{s}`")
                });
            match late_by {
                Some(late) => format!(
                    "signal `{signal}` came {late:?} late: more than {waited:?} after {since}"
                ),
                None => format!("signal `{signal}` did not arrive within {waited:?} of {since}"),
            }
        }
    };
    if let Some(detail) = detail {
        message.push_str(" (");
        message.push_str(detail);
        message.push(')');
    }
    message
}

/// Fails the check (verdict `FAIL`) with a formatted message unless `cond` holds.
///
/// ```
/// # fn check(user_orders: usize) -> Result<(), livecheck_core::CheckError> {
/// livecheck_core::ensure!(user_orders >= 1, "the user's index is empty ({user_orders})");
/// # Ok(()) }
/// # assert_eq!(check(0).unwrap_err().to_string(), "the user's index is empty (0)");
/// ```
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return ::std::result::Result::Err($crate::CheckError::Failed(format!($($arg)+)));
        }
    };
}

/// Fails the check (verdict `FAIL`) unless the two values are equal; the message shows both
/// (the second is the expected one).
///
/// ```
/// # fn check(side: &str) -> Result<(), livecheck_core::CheckError> {
/// livecheck_core::ensure_eq!(side, "sell", "the side was changed");
/// # Ok(()) }
/// # assert_eq!(
/// #     check("buy").unwrap_err().to_string(),
/// #     r#"the side was changed: expected "sell", got "buy""#
/// # );
/// ```
#[macro_export]
macro_rules! ensure_eq {
    ($left:expr, $right:expr, $($arg:tt)+) => {
        match (&$left, &$right) {
            (left, right) => {
                if !(*left == *right) {
                    return ::std::result::Result::Err($crate::CheckError::Failed(format!(
                        "{}: expected {:?}, got {:?}",
                        format!($($arg)+),
                        right,
                        left
                    )));
                }
            }
        }
    };
}

/// Fails the check (verdict `FAIL`) if the two values are equal; the message shows both
/// (the second is the one to differ from).
///
/// ```
/// # fn check(new_id: &str, old_id: &str) -> Result<(), livecheck_core::CheckError> {
/// livecheck_core::ensure_ne!(new_id, old_id, "the order kept its old id");
/// # Ok(()) }
/// # assert_eq!(
/// #     check("o-1", "o-1").unwrap_err().to_string(),
/// #     r#"the order kept its old id: expected a value other than "o-1", got "o-1""#
/// # );
/// ```
#[macro_export]
macro_rules! ensure_ne {
    ($left:expr, $right:expr, $($arg:tt)+) => {
        match (&$left, &$right) {
            (left, right) => {
                if *left == *right {
                    return ::std::result::Result::Err($crate::CheckError::Failed(format!(
                        "{}: expected a value other than {:?}, got {:?}",
                        format!($($arg)+),
                        right,
                        left
                    )));
                }
            }
        }
    };
}

/// Fails the check (verdict `FAIL`) unless the value matches the pattern (and its guard);
/// the message shows the value (`Debug`) and the pattern. The value is matched by value, as
/// with `matches!`.
///
/// ```
/// # fn check(execution_id: Option<u64>) -> Result<(), livecheck_core::CheckError> {
/// livecheck_core::ensure_matches!(execution_id, Some(id) if id > 0, "no execution");
/// # Ok(()) }
/// # assert_eq!(
/// #     check(None).unwrap_err().to_string(),
/// #     "no execution: expected a value matching `Some(id) if id > 0`, got None"
/// # );
/// ```
#[macro_export]
macro_rules! ensure_matches {
    ($expression:expr, $pattern:pat $(if $guard:expr)?, $($arg:tt)+) => {
        match $expression {
            $pattern $(if $guard)? => {}
            ref value => {
                return ::std::result::Result::Err($crate::CheckError::Failed(format!(
                    "{}: expected a value matching `{}`, got {:?}",
                    format!($($arg)+),
                    stringify!($pattern $(if $guard)?),
                    value
                )));
            }
        }
    };
}

/// Fails the check (verdict `FAIL`) with a formatted message.
///
/// ```
/// # fn check(status: u16) -> Result<(), livecheck_core::CheckError> {
/// if status == 404 {
///     livecheck_core::bail!("the order is gone (HTTP {status})");
/// }
/// # Ok(()) }
/// # assert_eq!(check(404).unwrap_err().to_string(), "the order is gone (HTTP 404)");
/// ```
#[macro_export]
macro_rules! bail {
    ($($arg:tt)+) => {
        return ::std::result::Result::Err($crate::CheckError::Failed(format!($($arg)+)))
    };
}

/// Fails the check with a broken business rule unless `cond` holds: verdict `FAIL` of kind
/// "invariant", the rule, the key and the named values in the report
/// ([`crate::Report::invariant`]), counted apart on the status page and in `/metrics`.
///
/// ```
/// use livecheck_core::{ensure_invariant, CheckError};
///
/// fn check(user: &str, open: u64, limit: u64) -> Result<(), CheckError> {
///     ensure_invariant!(open <= limit, "open sell exposure <= limit", key = user, open = open, limit = limit);
///     Ok(())
/// }
/// assert!(check("u1", 80, 100).is_ok());
/// assert_eq!(
///     check("u1", 120, 100).unwrap_err().to_string(),
///     r#"invariant broken: open sell exposure <= limit, for key "u1" (limit=100, open=120)"#
/// );
/// ```
#[macro_export]
macro_rules! ensure_invariant {
    ($cond:expr, $rule:expr, key = $key:expr $(, $name:ident = $value:expr)* $(,)?) => {
        if !$cond {
            return ::std::result::Result::Err($crate::CheckError::invariant(
                $rule,
                ::std::string::ToString::to_string(&$key),
                [$((stringify!($name), $crate::table::__json(&$value))),*],
            ));
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot load the order")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read the file")]
    struct Inner(#[source] std::io::Error);

    /// An error that prints its source in its own message, as `StimulusError` does.
    #[derive(Debug, thiserror::Error)]
    #[error("request failed: {0}")]
    struct Wrapping(#[source] Inner);

    #[derive(Debug, PartialEq)]
    enum Side {
        Buy,
        Sell,
    }

    fn failed(message: &str) -> Result<(), CheckError> {
        Err(CheckError::Failed(message.to_owned()))
    }

    #[test]
    fn question_mark_turns_any_error_into_error_with_its_source_chain() {
        fn load() -> Result<(), CheckError> {
            let root = std::io::Error::new(std::io::ErrorKind::NotFound, "no such receipt");
            Err(Outer(Inner(root)))?;
            Ok(())
        }
        assert_eq!(
            load(),
            Err(CheckError::Error(
                "cannot load the order: cannot read the file: no such receipt".into()
            ))
        );

        fn parse() -> Result<u32, CheckError> {
            Ok(serde_json::from_str::<u32>("\"x\"")?)
        }
        assert_eq!(
            parse(),
            Err(CheckError::Error(
                "invalid type: string \"x\", expected u32 at line 1 column 3".into()
            ))
        );
    }

    #[test]
    fn a_source_already_in_the_message_is_not_repeated() {
        let root = std::io::Error::new(std::io::ErrorKind::NotFound, "no such receipt");
        let error = CheckError::from(Wrapping(Inner(root)));
        assert_eq!(
            error.to_string(),
            "request failed: cannot read the file: no such receipt"
        );
    }

    /// `StimulusError::Request` prints reqwest's message and has it as its source: the chain
    /// names it once, and goes on to the root cause.
    #[tokio::test]
    async fn a_stimulus_error_converts_with_its_chain() {
        let error = crate::Target::new("http://127.0.0.1:1")
            .get("/order/init/sell/")
            .await
            .unwrap_err();
        let message = CheckError::from(error).to_string();
        assert!(
            message.starts_with(
                "request to http://127.0.0.1:1/order/init/sell/ failed: error sending request"
            ),
            "{message}"
        );
        assert_eq!(
            message.matches("error sending request").count(),
            1,
            "{message}"
        );
        assert!(
            message.to_lowercase().contains("connection refused"),
            "{message}"
        );
        println!("{message}");
    }

    #[test]
    fn timeout_display_is_unchanged() {
        let error = CheckError::Timeout {
            signal: "order_executed".into(),
            waited: Duration::from_secs(10),
            last_step: Some("order_cached".into()),
            late_by: None,
            detail: None,
            run_deadline: false,
        };
        assert_eq!(
            error.to_string(),
            "signal `order_executed` did not arrive within 10s of the previous step `order_cached`"
        );
        let deadline = CheckError::Timeout {
            signal: "fill".into(),
            waited: Duration::from_secs(4),
            last_step: None,
            late_by: Some(Duration::from_millis(250)),
            detail: Some("2 of 3 came".into()),
            run_deadline: true,
        };
        assert_eq!(
            deadline.to_string(),
            "signal `fill` came 250ms after the run's deadline (4s after the test was issued) (2 of 3 came)"
        );
    }

    #[test]
    fn ensure_fails_with_the_message() {
        fn check(n: usize) -> Result<(), CheckError> {
            ensure!(n >= 1, "the user's index is empty ({n})");
            Ok(())
        }
        assert_eq!(check(1), Ok(()));
        assert_eq!(check(0), failed("the user's index is empty (0)"));
    }

    #[test]
    fn ensure_eq_shows_expected_and_got() {
        fn check(side: Side) -> Result<(), CheckError> {
            ensure_eq!(side, Side::Sell, "the side of order {} was changed", 7);
            Ok(())
        }
        assert_eq!(check(Side::Sell), Ok(()));
        assert_eq!(
            check(Side::Buy),
            failed("the side of order 7 was changed: expected Sell, got Buy")
        );
    }

    #[test]
    fn ensure_ne_shows_both_values() {
        fn check(new_id: &str, old_id: &str) -> Result<(), CheckError> {
            ensure_ne!(new_id, old_id, "order {old_id} kept its id");
            Ok(())
        }
        assert_eq!(check("o-2", "o-1"), Ok(()));
        assert_eq!(
            check("o-1", "o-1"),
            failed(r#"order o-1 kept its id: expected a value other than "o-1", got "o-1""#)
        );
    }

    #[test]
    fn ensure_matches_shows_the_value_and_the_pattern() {
        fn check(execution: Option<u64>) -> Result<(), CheckError> {
            ensure_matches!(execution, Some(id) if id > 0, "order {} was not executed", 7);
            Ok(())
        }
        assert_eq!(check(Some(3)), Ok(()));
        assert_eq!(
            check(None),
            failed("order 7 was not executed: expected a value matching `Some(id) if id > 0`, got None")
        );
        assert_eq!(
            check(Some(0)),
            failed("order 7 was not executed: expected a value matching `Some(id) if id > 0`, got Some(0)")
        );

        fn side(side: Option<Side>) -> Result<(), CheckError> {
            ensure_matches!(side, Some(Side::Sell | Side::Buy), "no side");
            ensure_matches!(side, Some(Side::Sell), "a buy order");
            Ok(())
        }
        assert_eq!(side(Some(Side::Sell)), Ok(()));
        assert_eq!(
            side(None),
            failed("no side: expected a value matching `Some(Side::Sell | Side::Buy)`, got None")
        );
        assert_eq!(
            side(Some(Side::Buy)),
            failed("a buy order: expected a value matching `Some(Side::Sell)`, got Some(Buy)")
        );
    }

    #[test]
    fn bail_fails_with_the_message() {
        fn check(status: u16) -> Result<(), CheckError> {
            match status {
                200 => Ok(()),
                404 => bail!("the order is gone (HTTP {status})"),
                other => {
                    bail!("unexpected HTTP {other}");
                }
            }
        }
        assert_eq!(check(200), Ok(()));
        assert_eq!(check(404), failed("the order is gone (HTTP 404)"));
        assert_eq!(check(500), failed("unexpected HTTP 500"));
    }
}
