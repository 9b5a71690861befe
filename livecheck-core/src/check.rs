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
    #[error("{}", timeout_message(self))]
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
    #[error("{0}")]
    Error(String),
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
