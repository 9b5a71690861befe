//! Counters: every rejected, evicted or skipped thing is counted here, never dropped silently.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// How many copies ("stripes") of its counters a set keeps: a thread adds to its own stripe,
/// so threads on different cores do not take the same cache line from each other on every
/// count (a runner's lanes count every record), and a read sums the stripes.
const STRIPES: usize = 8;

/// The stripe of the calling thread: threads take the stripes in turn (beyond
/// [`STRIPES`] threads, they share).
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    MINE.with(|mine| *mine)
}

macro_rules! counters {
    ($(#[$meta:meta])* $name:ident($stripe:ident) { $($(#[doc = $doc:literal])* $field:ident,)* }) => {
        /// One stripe of the counters: see [`STRIPES`]. Aligned to 128 bytes (two cache
        /// lines, which some cores fetch together) so that stripes share no line.
        #[derive(Debug, Default)]
        #[repr(align(128))]
        pub(crate) struct $stripe {
            $($(#[doc = $doc])* pub(crate) $field: AtomicU64,)*
        }

        $(#[$meta])*
        #[derive(Default)]
        pub struct $name {
            // Read with the methods of the same name (or `snapshot`); counted with
            // `bump(&counters.here().name)`.
            stripes: [$stripe; STRIPES],
        }

        impl $name {
            /// The calling thread's stripe, to count in.
            #[inline]
            pub(crate) fn here(&self) -> &$stripe {
                &self.stripes[stripe()]
            }

            /// The first stripe: where a gauge (a level set, not added to) is kept, the
            /// others staying at zero.
            #[allow(dead_code, reason = "not every set has a gauge")]
            pub(crate) fn gauges(&self) -> &$stripe {
                &self.stripes[0]
            }

            $(
                $(#[doc = $doc])*
                pub fn $field(&self) -> u64 {
                    self.stripes
                        .iter()
                        .map(|s| s.$field.load(Ordering::Relaxed))
                        .fold(0, u64::wrapping_add)
                }
            )*

            /// Every counter by name, at this instant.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($field), self.$field()),)*]
            }
        }

        impl std::fmt::Debug for $name {
            /// The totals, by name (not the stripes).
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut debug = f.debug_struct(stringify!($name));
                $(debug.field(stringify!($field), &self.$field());)*
                debug.finish()
            }
        }

        impl $name {

            /// Every counter's name and what it counts (its doc comment, lines joined), in
            /// the order of [`Self::snapshot`]: the help texts of the exported metrics.
            pub const HELP: &'static [(&'static str, &'static str)] =
                &[$((stringify!($field), concat!($($doc),*)),)*];

            /// What the counter `name` counts (its doc comment, on one line).
            pub fn help(name: &str) -> Option<String> {
                Self::HELP.iter().find(|(n, _)| *n == name).map(|(_, doc)| {
                    doc.split_whitespace().collect::<Vec<_>>().join(" ")
                })
            }
        }
    };
}

counters! {
    /// Counters of a [`crate::LiveCheck`] client (the service side).
    ClientCounters(ClientStripe) {
        /// Tests started by `maybe_trigger`.
        tests_triggered,
        /// Signals published.
        signals_sent,
        /// Signals that could not be serialized or enqueued.
        signal_errors,
        /// Records the broker did not acknowledge.
        delivery_errors,
        /// Outgoing contexts whose arguments were left out of the headers: their JSON is longer
        /// than `headers::MAX_ARGUMENTS_LEN` (counted on the client of the task that sent).
        arguments_not_injected,
        /// Incoming contexts (HTTP or Kafka headers) rejected, for any of the reasons counted
        /// below.
        contexts_rejected,
        /// Incoming contexts rejected because a header is missing, empty, not UTF-8, or a time
        /// is bad.
        contexts_rejected_malformed,
        /// Incoming contexts rejected because a header value is too long.
        contexts_rejected_oversized,
        /// Incoming contexts rejected because the test id is not 1 to 128 bytes of visible
        /// ASCII.
        contexts_rejected_bad_test_id,
        /// Incoming contexts rejected because the route is not 1 to 256 bytes of visible
        /// ASCII.
        contexts_rejected_bad_route,
        /// Incoming contexts rejected because the arguments header does not hold JSON.
        contexts_rejected_bad_arguments,
        /// Incoming contexts rejected because a context header appears more than once.
        contexts_rejected_duplicate_header,
        /// Incoming contexts rejected because signing is on and the context is not signed.
        contexts_rejected_unsigned,
        /// Incoming contexts rejected because the signature header is malformed.
        contexts_rejected_malformed_signature,
        /// Incoming contexts rejected because the signature names a key id that is not
        /// configured.
        contexts_rejected_unknown_key,
        /// Incoming contexts rejected because the signature does not match (forged, or a field
        /// was tampered with), or arguments were added to a context signed without them.
        contexts_rejected_bad_signature,
        /// Incoming contexts rejected because signing is on and the context has expired.
        contexts_rejected_expired,
        /// A gauge, not a counter: 1 while the client follows the control topic (its
        /// triggers apply the control topic's settings), 0 otherwise.
        control_following,
        /// Control records applied (new settings for a case, or a case deleted).
        control_records,
        /// Control records ignored because they are not newer than the settings held.
        control_ignored,
        /// Control records that did not decode or check (logged with their offset).
        control_malformed,
        /// Times the client stopped following the control topic, or did not start to in
        /// time (each logged once at warn).
        control_episodes,
        /// Heartbeats enqueued.
        heartbeats_sent,
        /// Heartbeats that could not be serialized or enqueued.
        heartbeat_errors,
        /// Hops of tests recorded by the Kafka helpers (a record produced or consumed in a
        /// test's scope).
        hops_sent,
        /// Hops that could not be serialized or enqueued.
        hop_errors,
        /// Records read through [`crate::LiveCheck::consume`] that carried no accepted test
        /// context (none, or one rejected: see `contexts_rejected`); by topic and group in
        /// the consumer positions the client reports.
        records_without_context,
        /// Consumer-position records published (one per signals partition a report).
        positions_sent,
        /// Consumer-position records that could not be enqueued.
        position_errors,
    }
}

counters! {
    /// Counters of a [`crate::Runner`].
    RunnerCounters(RunnerStripe) {
        /// Test records received.
        tests_received,
        /// Signal records received.
        signals_received,
        /// Records that did not decode (logged with topic/partition/offset).
        records_malformed,
        /// Consumer-position reports of the services read from the signals topic.
        positions_received,
        /// Hops of a test past the 64 a test keeps (dropped; steps are bounded apart).
        hops_dropped,
        /// Test records refused because their context is not signed (signing keys set).
        tests_rejected_unsigned,
        /// Test records refused because their signature is malformed, names an unknown key
        /// or does not match (forged or tampered).
        tests_rejected_bad_signature,
        /// Test records refused for another reason (a bad test id).
        tests_rejected_other,
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
        /// Offsets of the signals topic never read: the consumer read a record past the next
        /// offset it expected, and reading again from earlier offsets did not bring them
        /// (logged at error with the partition and the range; see `partition_rewinds`). The
        /// broker did not serve them, or retention deleted them first. A test in flight that
        /// then misses a step ends in `ERROR`, not `TIMEOUT`.
        signals_skipped_by_broker,
        /// Offsets of the tests topic never read, likewise: their tests were not run and
        /// have no report.
        tests_skipped_by_broker,
        /// Times a tests or signals partition was read again from an earlier offset because
        /// the broker left records out (logged at warn with the partition and offsets): a
        /// record past the next offset came, or none came for 3 s although the broker held
        /// some. The records read before are dropped when they come again.
        partition_rewinds,
        /// Times every rewind of a partition brought nothing from its next offset although
        /// the broker held records after it (logged at error): its tests and steps wait.
        partitions_stalled,
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
        /// Reports a revoke waited for, to hand its partitions on once they were
        /// acknowledged (their next owner then finds those tests decided).
        reports_awaited_on_revoke,
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
        /// Runs that failed because a business invariant was broken (also counted in
        /// `verdict_fail`).
        invariant_failures,
        /// Table reads by runs.
        table_reads,
        /// Table writes applied by runs (each one a changelog record).
        table_writes,
        /// Table writes a run made again (its test was run again after a restart or a
        /// rebalance) and that were not applied again.
        table_writes_replayed,
        /// Writes an entry stopped remembering before their tests were committed (more
        /// than `table::MAX_WRITES_PER_ENTRY`): a run again of those tests would apply them
        /// again.
        table_writes_forgotten,
        /// Table writes refused by Kafka or not enqueued, and sent again.
        table_write_errors,
        /// Table writes given up after `report_retry_for` while Kafka was reachable.
        table_writes_lost,
        /// Changelog records read while restoring partitions and following global tables.
        table_records_restored,
        /// Changelog records that did not decode (skipped, logged with topic, partition and
        /// offset).
        table_records_malformed,
        /// Changelog records of a runner that had lost the partition, read after its new
        /// owner's fence (skipped).
        table_records_fenced,
        /// Writes whose results an entry stopped remembering to keep its record under
        /// `table::MAX_RECORD_BYTES` (a run again of their tests gets the current value).
        table_results_dropped,
    }
}

impl ClientCounters {
    /// Names in [`ClientCounters::snapshot`] that are gauges (a level that goes down as well
    /// as up), not counters: export them as gauges.
    pub const GAUGES: &'static [&'static str] = &["control_following"];

    /// The per-reason counter of a rejected context.
    pub(crate) fn rejected_for(&self, error: &crate::headers::ContextError) -> &AtomicU64 {
        use crate::headers::ContextError as E;
        let c = self.here();
        match error {
            E::Missing { .. }
            | E::Empty { .. }
            | E::NotUtf8 { .. }
            | E::BadTimestamp { .. }
            | E::ExpiresBeforeIssued { .. } => &c.contexts_rejected_malformed,
            E::Oversized { .. } => &c.contexts_rejected_oversized,
            E::BadTestId { .. } => &c.contexts_rejected_bad_test_id,
            E::BadRoute { .. } => &c.contexts_rejected_bad_route,
            E::BadArguments { .. } => &c.contexts_rejected_bad_arguments,
            E::DuplicateHeader { .. } => &c.contexts_rejected_duplicate_header,
            E::Unsigned { .. } => &c.contexts_rejected_unsigned,
            E::MalformedSignature { .. } => &c.contexts_rejected_malformed_signature,
            E::UnknownKey { .. } => &c.contexts_rejected_unknown_key,
            E::BadSignature { .. } | E::UnsignedArguments { .. } => {
                &c.contexts_rejected_bad_signature
            }
            E::Expired { .. } => &c.contexts_rejected_expired,
        }
    }
}

/// Adds one to a counter.
#[inline]
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_says_what_it_counts_on_one_line() {
        let names = RunnerCounters::default()
            .snapshot()
            .into_iter()
            .map(|(n, _)| n);
        let client = ClientCounters::default()
            .snapshot()
            .into_iter()
            .map(|(n, _)| n);
        for name in names {
            let help = RunnerCounters::help(name).unwrap_or_default();
            assert!(help.len() > 10 && !help.contains('\n'), "{name}: {help:?}");
        }
        for name in client {
            let help = ClientCounters::help(name).unwrap_or_default();
            assert!(help.len() > 10 && !help.contains('\n'), "{name}: {help:?}");
        }
        assert_eq!(
            RunnerCounters::help("tests_received").as_deref(),
            Some("Test records received.")
        );
        assert_eq!(
            ClientCounters::help("contexts_rejected_malformed").as_deref(),
            Some("Incoming contexts rejected because a header is missing, empty, not UTF-8, or a time is bad.")
        );
    }
}
