//! Counters: every rejected, evicted or skipped thing is counted here, never dropped silently.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: AtomicU64,)*
        }

        impl $name {
            /// Every counter by name, at this instant.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($field), self.$field.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters! {
    /// Counters of a [`crate::LiveCheck`] client (the service side).
    ClientCounters {
        /// Tests started by `maybe_trigger`.
        tests_triggered,
        /// Signals published.
        signals_sent,
        /// Signals that could not be serialized or enqueued.
        signal_errors,
        /// Records the broker did not acknowledge.
        delivery_errors,
        /// Incoming contexts (HTTP or Kafka headers) rejected as malformed.
        contexts_rejected,
    }
}

counters! {
    /// Counters of a [`crate::Runner`].
    RunnerCounters {
        /// Test records received.
        tests_received,
        /// Signal records received.
        signals_received,
        /// Records that did not decode (logged with topic/partition/offset).
        records_malformed,
        /// Records naming a case the runner does not know.
        unknown_case,
        /// Test records seen again for a test already known.
        duplicate_tests,
        /// Signals seen again for a step already received.
        duplicate_signals,
        /// Signals for a test whose verdict is already published.
        late_signals,
        /// Signals buffered because their test record had not arrived yet.
        signals_buffered,
        /// Buffered signals evicted because the early-signal buffer was full or stale.
        buffer_evictions,
        /// Signals that name a case other than their test's.
        signals_case_mismatch,
        /// Records of tests this runner does not watch (`watched_only`), ignored.
        foreign_records,
        /// Tests refused because the in-flight limit was reached.
        capacity_skips,
        /// Reports published.
        reports_published,
        /// Reports the broker did not acknowledge (each attempt).
        report_errors,
        /// Reports published with arguments or long texts cut (too large).
        reports_truncated,
        /// Report attempts retried after a refusal.
        reports_retried,
        /// Reports given up on after retrying for `report_retry_for` (logged at error).
        reports_lost,
        /// Tests found decided on the reports topic when a partition was restored (not run
        /// again).
        decided_restored,
        /// Runs handed back unfinished (partition revoked, or shutdown): the partition's
        /// next owner runs them.
        runs_handed_back,
        /// Runs stopped at the overall run deadline (`max_run_time`): verdict `ERROR`.
        runs_overdue,
        /// Partition restores that failed and were retried.
        restore_retries,
        /// Runs that passed.
        verdict_pass,
        /// Runs that failed a contract.
        verdict_fail,
        /// Runs whose check errored.
        verdict_error,
        /// Runs that timed out waiting for a step.
        verdict_timeout,
        /// Runs skipped (expired or inactive).
        verdict_skip,
    }
}

/// Adds one to a counter.
#[inline]
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
