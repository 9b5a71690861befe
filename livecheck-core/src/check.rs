//! Why a check did not pass, and the macros that say so.

use std::time::Duration;

/// Why a check did not pass. Return it from expectations (`?` on [`Run::wait`], or
/// [`crate::ensure!`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// A contract was violated: verdict `FAIL`.
    #[error("{0}")]
    Failed(String),
    /// A step did not arrive in time: verdict `TIMEOUT`. In time means, by the records'
    /// own timestamps (event time), within the timeout of the previous step (the first
    /// step: of the test record).
    #[error("{}", timeout_message(signal, *waited, last_step.as_deref(), *late_by))]
    Timeout {
        /// The step that did not come in time.
        signal: String,
        /// The timeout it had.
        waited: Duration,
        /// The last step that did come.
        last_step: Option<String>,
        /// Set when the step did come, but after its deadline: by how much.
        late_by: Option<Duration>,
    },
    /// The check itself errored: verdict `ERROR`.
    #[error("{0}")]
    Error(String),
}

fn timeout_message(
    signal: &str,
    waited: Duration,
    last_step: Option<&str>,
    late_by: Option<Duration>,
) -> String {
    let since = last_step.map_or("the start of the test (no step arrived)".to_owned(), |s| {
        format!("the previous step `{s}`")
    });
    match late_by {
        Some(late) => {
            format!("signal `{signal}` came {late:?} late: more than {waited:?} after {since}")
        }
        None => format!("signal `{signal}` did not arrive within {waited:?} of {since}"),
    }
}

/// Fails the check (verdict `FAIL`) with a formatted message unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return ::std::result::Result::Err($crate::CheckError::Failed(format!($($arg)+)));
        }
    };
}

/// Fails the check (verdict `FAIL`) unless the two values are equal; the message shows both.
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
