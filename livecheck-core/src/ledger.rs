//! The at-least-once core: which records a partition still needs, and the one position
//! per partition that the runner commits.
//!
//! Tests, signals and reports are co-partitioned by test id (or by the test's route, see
//! [`crate::TestContext::route`]), so partition `P` of the three
//! topics belongs to one runner at a time. What that runner must be able to resume from is
//! committed **atomically**, as the tests-topic offset of `P` plus two positions in the
//! commit's metadata:
//!
//! - `tests`: the smallest test record whose test is not decided (no report delivered);
//! - `signals`: the smallest signal record that an undecided test may still need — a
//!   decided test's signals are held until its own test record is behind `tests`, so a test
//!   that is read again is never run without the signals the log holds for it;
//! - `reports`: where the reports of the decided tests at or after `tests` begin. A new
//!   owner reads the reports topic from there (the changelog of decided tests) and does not
//!   run those tests again.
//!
//! Nothing here talks to Kafka: the runner feeds it records and report acknowledgements and
//! asks it what to commit.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What a new owner of a partition resumes from (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resume {
    /// The tests topic offset (the commit's offset).
    pub(crate) tests: i64,
    /// The signals topic offset.
    pub(crate) signals: i64,
    /// The reports topic offset.
    pub(crate) reports: i64,
}

const METADATA_PREFIX: &str = "livecheck/1";

impl Resume {
    /// The commit metadata carrying the signals and reports positions.
    pub(crate) fn metadata(&self) -> String {
        format!(
            "{METADATA_PREFIX} signals={} reports={}",
            self.signals, self.reports
        )
    }

    /// Reads the signals and reports positions back from commit metadata written by
    /// [`Resume::metadata`]; `None` for metadata this runner did not write.
    pub(crate) fn parse_metadata(tests: i64, metadata: &str) -> Option<Self> {
        let rest = metadata.strip_prefix(METADATA_PREFIX)?.strip_prefix(' ')?;
        let (mut signals, mut reports) = (None, None);
        for field in rest.split_whitespace() {
            match field.split_once('=') {
                Some(("signals", v)) => signals = v.parse::<i64>().ok(),
                Some(("reports", v)) => reports = v.parse::<i64>().ok(),
                _ => {}
            }
        }
        Some(Self {
            tests,
            signals: signals.filter(|o| *o >= 0)?,
            reports: reports.filter(|o| *o >= 0)?,
        })
    }
}

/// A decided test whose test record is not yet behind the committed tests offset.
#[derive(Debug)]
struct Decided {
    signals: Vec<i64>,
    report: Option<i64>,
}

/// One partition's bookkeeping.
#[derive(Debug)]
struct PartitionLedger {
    /// Test records read whose tests are not decided yet.
    tests_pending: BTreeSet<i64>,
    /// The offset after the last test record read (or the resume position).
    tests_next: i64,
    /// Signal records an undecided test may still need.
    signals_pending: BTreeSet<i64>,
    /// Signal records of decided tests, held until their test record is committable.
    signals_held: BTreeSet<i64>,
    /// The offset after the last signal record read (or the resume position).
    signals_next: i64,
    /// Decided tests by test record offset, while that offset is not committable.
    decided: BTreeMap<i64, Decided>,
    /// Where a report produced from now on lands at the earliest.
    reports_next: i64,
    /// What was last committed (to skip commits that change nothing).
    committed: Option<Resume>,
    /// Tests an earlier owner decided, found on the reports topic when the partition was
    /// restored: their reports' offsets, pinned like this owner's own decisions until their
    /// test records are committable.
    restored: HashMap<String, i64>,
    /// Where the tests partition ended when it was restored: a test in `restored` whose
    /// record is on this partition had it read before the restore, so before this offset.
    /// Until this owner has read that far, the reports position stays at the earliest
    /// report in `restored`, whose test may be among the records still to read; past it,
    /// what is left there are tests behind the committed tests offset (or whose records are
    /// elsewhere), never read here again.
    restored_until: i64,
}

impl PartitionLedger {
    fn new(from: Resume, restored: HashMap<String, i64>, restored_until: i64) -> Self {
        Self {
            restored,
            restored_until,
            tests_pending: BTreeSet::new(),
            tests_next: from.tests,
            signals_pending: BTreeSet::new(),
            signals_held: BTreeSet::new(),
            signals_next: from.signals,
            decided: BTreeMap::new(),
            reports_next: from.reports,
            committed: Some(from),
        }
    }

    fn tests_committable(&self) -> i64 {
        self.tests_pending
            .first()
            .copied()
            .unwrap_or(self.tests_next)
    }

    /// Forgets decided tests whose test records are committable, and their held signals.
    fn prune(&mut self) {
        let committable = self.tests_committable();
        while let Some(entry) = self.decided.first_entry() {
            if *entry.key() >= committable {
                break;
            }
            for signal in entry.remove().signals {
                self.signals_held.remove(&signal);
            }
        }
    }

    fn resume(&self) -> Resume {
        let signals = [
            self.signals_pending.first(),
            self.signals_held.first(),
            Some(&self.signals_next),
        ]
        .into_iter()
        .flatten()
        .min()
        .copied()
        .unwrap_or(self.signals_next);
        // A test an earlier owner decided whose record is not read yet: its report must stay
        // ahead of the reports position, or a next owner would run the test again.
        let restored = (self.tests_next < self.restored_until)
            .then(|| self.restored.values().min().copied())
            .flatten();
        let reports = self
            .decided
            .values()
            .filter_map(|d| d.report)
            .chain(restored)
            .min()
            .unwrap_or(self.reports_next)
            .min(self.reports_next);
        Resume {
            tests: self.tests_committable(),
            signals,
            reports,
        }
    }
}

/// Every owned partition's bookkeeping. Partitions are added once their new owner has
/// restored them and removed when they are revoked.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    partitions: HashMap<i32, PartitionLedger>,
}

impl Ledger {
    /// Starts tracking `partition` from what was committed (or the topics' starts), with
    /// the tests decided by earlier owners (test id → report offset) and where the tests
    /// partition ended when they were read (see `PartitionLedger::restored_until`).
    pub(crate) fn open(
        &mut self,
        partition: i32,
        from: Resume,
        restored: HashMap<String, i64>,
        restored_until: i64,
    ) {
        self.partitions.insert(
            partition,
            PartitionLedger::new(from, restored, restored_until),
        );
    }

    /// A test record of a test decided by an earlier owner: it stays pinned by its report
    /// (a later owner must find that report too) until it is committable. Whether the test
    /// was one of those; if not, the caller decides what the record needs.
    pub(crate) fn decided_before(&mut self, partition: i32, offset: i64, test_id: &str) -> bool {
        let Some(report) = self
            .partitions
            .get_mut(&partition)
            .and_then(|p| p.restored.remove(test_id))
        else {
            return false;
        };
        self.decided(partition, offset, [], Some(report));
        true
    }

    /// Stops tracking `partition` (revoked): whatever it held is the next owner's.
    pub(crate) fn close(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    /// Notes a test record read; whether it is new (a record read twice is tracked once).
    /// A test record of a restored test goes through this and [`Ledger::decided_before`]
    /// with no commit in between (both on the lane's loop, as the commits): between them,
    /// `tests_next` may be past `restored_until` while the test is not yet pinned.
    pub(crate) fn test_read(&mut self, partition: i32, offset: i64) -> bool {
        let Some(p) = self.partitions.get_mut(&partition) else {
            return false;
        };
        p.tests_next = p.tests_next.max(offset + 1);
        !p.decided.contains_key(&offset) && p.tests_pending.insert(offset)
    }

    /// Notes a signal record read; whether it is new.
    pub(crate) fn signal_read(&mut self, partition: i32, offset: i64) -> bool {
        let Some(p) = self.partitions.get_mut(&partition) else {
            return false;
        };
        p.signals_next = p.signals_next.max(offset + 1);
        !p.signals_held.contains(&offset) && p.signals_pending.insert(offset)
    }

    /// A test record that needs nothing more (malformed, of an unknown case, a test decided
    /// before): committable as soon as the records before it are.
    pub(crate) fn test_done(&mut self, partition: i32, offset: i64) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.tests_pending.remove(&offset);
            p.prune();
        }
    }

    /// Signal records that no test needs any more (late, duplicate, malformed, expired in
    /// the early buffer).
    pub(crate) fn signals_done(&mut self, partition: i32, offsets: impl IntoIterator<Item = i64>) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            for offset in offsets {
                p.signals_pending.remove(&offset);
            }
        }
    }

    /// A test is decided: its report is acknowledged at `report` on the reports topic
    /// (`None`: given up on, see the runner's report retries). Its signals stay held until
    /// its test record is committable.
    pub(crate) fn decided(
        &mut self,
        partition: i32,
        test: i64,
        signals: impl IntoIterator<Item = i64>,
        report: Option<i64>,
    ) {
        let Some(p) = self.partitions.get_mut(&partition) else {
            return;
        };
        if let Some(report) = report {
            p.reports_next = p.reports_next.max(report + 1);
        }
        if !p.tests_pending.remove(&test) {
            // Not read by this owner (or decided twice): nothing of it is held here.
            return;
        }
        let mut held = Vec::new();
        for signal in signals {
            if p.signals_pending.remove(&signal) {
                p.signals_held.insert(signal);
                held.push(signal);
            }
        }
        p.decided.insert(
            test,
            Decided {
                signals: held,
                report,
            },
        );
        p.prune();
    }

    /// A report (of any test, or a record of another kind) was acknowledged at `offset` of
    /// the reports topic's `partition`.
    pub(crate) fn report_acked(&mut self, partition: i32, offset: i64) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.reports_next = p.reports_next.max(offset + 1);
        }
    }

    /// What to commit: per partition whose position moved since the last commit.
    pub(crate) fn to_commit(&self) -> Vec<(i32, Resume)> {
        self.partitions
            .iter()
            .filter_map(|(partition, p)| {
                let resume = p.resume();
                (p.committed != Some(resume)).then_some((*partition, resume))
            })
            .collect()
    }

    /// Every tracked partition's position, moved or not (a final commit).
    pub(crate) fn positions(&self) -> Vec<(i32, Resume)> {
        self.partitions
            .iter()
            .map(|(partition, p)| (*partition, p.resume()))
            .collect()
    }

    /// Notes that `resume` was committed for `partition`.
    pub(crate) fn committed(&mut self, partition: i32, resume: Resume) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.committed = Some(resume);
        }
    }

    /// Commits may have been lost: every partition's position is committed again at the
    /// next tick, moved or not. The runner cannot know: librdkafka reports an asynchronous
    /// commit's result only to a commit callback or a reply queue, and rdkafka's
    /// asynchronous commit sets neither; a group that rebalances refuses the commits made
    /// meanwhile (librdkafka's `COMMITFAIL` lines).
    pub(crate) fn commit_all_again(&mut self) {
        for p in self.partitions.values_mut() {
            p.committed = None;
        }
    }

    /// Records read but not committable yet, per kind: (tests, signals).
    pub(crate) fn held(&self) -> (usize, usize) {
        self.partitions.values().fold((0, 0), |(t, s), p| {
            (
                t + p.tests_pending.len() + p.decided.len(),
                s + p.signals_pending.len() + p.signals_held.len(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: Resume = Resume {
        tests: 10,
        signals: 100,
        reports: 1000,
    };

    fn ledger() -> Ledger {
        let mut l = Ledger::default();
        l.open(0, START, HashMap::new(), 0);
        l
    }

    fn position(l: &Ledger) -> Resume {
        l.positions()[0].1
    }

    #[test]
    fn nothing_read_commits_nothing_new() {
        let l = ledger();
        assert_eq!(position(&l), START);
        assert!(l.to_commit().is_empty());
    }

    #[test]
    fn an_undecided_test_pins_tests_and_its_signals() {
        let mut l = ledger();
        assert!(l.test_read(0, 10));
        assert!(l.signal_read(0, 100));
        assert!(l.signal_read(0, 101));
        assert_eq!(position(&l), START);
        l.decided(0, 10, [100, 101], Some(1000));
        assert_eq!(
            position(&l),
            Resume {
                tests: 11,
                signals: 102,
                reports: 1001
            }
        );
    }

    /// The bug of issue 8: a finished test's signals were released while its test record
    /// was held back behind an earlier unfinished test; after a restart the test was read
    /// again without its signals.
    #[test]
    fn a_decided_test_behind_an_undecided_one_keeps_its_signals_and_report() {
        let mut l = ledger();
        l.test_read(0, 10); // slow test: undecided
        l.test_read(0, 11); // fast test
        l.signal_read(0, 100); // the fast test's signal
        l.decided(0, 11, [100], Some(1005));
        let r = position(&l);
        assert_eq!(r.tests, 10, "the slow test pins the tests offset");
        assert_eq!(
            r.signals, 100,
            "the fast test's signal is held, not released"
        );
        assert_eq!(
            r.reports, 1005,
            "a new owner reads the fast test's report and does not run it again"
        );
        l.decided(0, 10, [], Some(1006));
        assert_eq!(
            position(&l),
            Resume {
                tests: 12,
                signals: 101,
                reports: 1007
            }
        );
    }

    #[test]
    fn late_and_malformed_records_do_not_pin() {
        let mut l = ledger();
        l.test_read(0, 10);
        l.test_done(0, 10);
        l.signal_read(0, 100);
        l.signals_done(0, [100]);
        assert_eq!(
            position(&l),
            Resume {
                tests: 11,
                signals: 101,
                reports: 1000
            }
        );
    }

    #[test]
    fn a_record_read_twice_is_tracked_once() {
        let mut l = ledger();
        assert!(l.test_read(0, 10));
        assert!(!l.test_read(0, 10));
        l.decided(0, 10, [], Some(1000));
        // Read again after its decision (a consumer re-fetch): not pending again.
        l.test_read(0, 12);
        assert!(l.signal_read(0, 100));
        assert!(!l.signal_read(0, 100));
    }

    #[test]
    fn a_report_given_up_on_does_not_pin_the_partition() {
        let mut l = ledger();
        l.test_read(0, 10);
        l.decided(0, 10, [], None);
        assert_eq!(position(&l).tests, 11);
    }

    #[test]
    fn commits_only_what_moved_and_forgets_revoked_partitions() {
        let mut l = ledger();
        l.test_read(0, 10);
        l.decided(0, 10, [], Some(1000));
        let moved = l.to_commit();
        assert_eq!(moved.len(), 1);
        l.committed(0, moved[0].1);
        assert!(l.to_commit().is_empty());
        l.close(0);
        assert!(l.positions().is_empty());
        assert!(
            !l.test_read(0, 11),
            "records of a revoked partition are not tracked"
        );
    }

    /// A commit the group may have refused: every position goes out again, moved or not.
    #[test]
    fn after_commits_that_may_be_lost_every_position_is_committed_again() {
        let mut l = ledger();
        l.open(1, START, HashMap::new(), 0);
        l.test_read(0, 10);
        l.decided(0, 10, [], Some(1000));
        for (p, resume) in l.to_commit() {
            l.committed(p, resume);
        }
        assert!(l.to_commit().is_empty());
        l.commit_all_again();
        let mut again = l.to_commit();
        again.sort_by_key(|(p, _)| *p);
        let mut all = l.positions();
        all.sort_by_key(|(p, _)| *p);
        assert_eq!(again, all);
        assert_eq!(again.len(), 2, "the partition that never moved too");
        for (p, resume) in again {
            l.committed(p, resume);
        }
        assert!(l.to_commit().is_empty());
    }

    /// A test an earlier owner decided (its report found on restore) keeps the reports
    /// position at its report until its record is committable, so the next owner finds it
    /// too and does not run it again without its signals.
    #[test]
    fn a_test_decided_by_an_earlier_owner_pins_its_report() {
        let mut l = Ledger::default();
        let restored = HashMap::from([("d".to_owned(), 900)]);
        l.open(
            0,
            Resume {
                reports: 1000,
                ..START
            },
            restored,
            12,
        );
        l.test_read(0, 10); // undecided
        l.test_read(0, 11); // "d"
        assert!(l.decided_before(0, 11, "d"));
        assert!(!l.decided_before(0, 11, "d"), "once");
        assert!(!l.decided_before(0, 12, "other"));
        assert_eq!(position(&l).reports, 900);
        l.decided(0, 10, [], Some(1001));
        assert_eq!(position(&l).reports, 1002);
    }

    /// A restored test whose record is still to be read keeps the reports position at its
    /// report, moved or not, so that any commit meanwhile (a re-commit of everything, after
    /// a rebalance) leaves it for a next owner to find; once the partition is read to where
    /// it ended at the restore, what is left in `restored` is behind the tests offset.
    #[test]
    fn a_restored_decision_not_read_yet_holds_the_reports_position() {
        let mut l = Ledger::default();
        let from = Resume {
            reports: 1000,
            ..START
        };
        // "d" decided at report 900, "behind" at 950 (its record before offset 10).
        let restored = HashMap::from([("d".to_owned(), 900), ("behind".to_owned(), 950)]);
        l.open(0, from, restored, 13);
        assert_eq!(position(&l).reports, 900, "nothing read yet");
        l.test_read(0, 10);
        l.decided(0, 10, [], Some(1000));
        assert_eq!(
            position(&l).reports,
            900,
            "\"d\" (record 11 or 12) not read yet"
        );
        l.test_read(0, 11);
        assert!(l.decided_before(0, 11, "d"));
        assert_eq!(position(&l).tests, 12);
        assert_eq!(
            position(&l).reports,
            950,
            "\"d\" committable, \"behind\" may still be among the records to read"
        );
        l.test_read(0, 12);
        l.test_done(0, 12);
        assert_eq!(position(&l).tests, 13);
        assert_eq!(
            position(&l).reports,
            1001,
            "read past the restore's end: \"behind\" is never read, and pins nothing"
        );
    }

    #[test]
    fn metadata_round_trips_and_foreign_metadata_is_refused() {
        let r = Resume {
            tests: 5,
            signals: 7,
            reports: 9,
        };
        assert_eq!(Resume::parse_metadata(5, &r.metadata()), Some(r));
        assert_eq!(Resume::parse_metadata(5, ""), None);
        assert_eq!(
            Resume::parse_metadata(5, "livecheck/10 signals=1 reports=2"),
            None
        );
        assert_eq!(Resume::parse_metadata(5, "livecheck/1 signals=3"), None);
        assert_eq!(
            Resume::parse_metadata(5, "livecheck/1 signals=-1 reports=2"),
            None
        );
    }

    #[test]
    fn acknowledged_reports_of_other_records_move_the_reports_position() {
        let mut l = ledger();
        l.report_acked(0, 1500);
        assert_eq!(position(&l).reports, 1501);
    }
}
