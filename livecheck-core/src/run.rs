//! A run: one execution of a case's expectations for one test.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::de::DeserializeOwned;

use crate::check::CheckError;
use crate::clock::Clocks;
use crate::context::TestContext;
use crate::registry::{Arrival, Registry, WaitStart};
use crate::report::Step;
use crate::signal::Signal;

pub(crate) struct RunState {
    pub(crate) timeline: Vec<Step>,
    /// Event time of the previous step (the first step: of the test record).
    pub(crate) previous_at: DateTime<Utc>,
    pub(crate) missing_step: Option<String>,
}

pub(crate) struct RunShared {
    pub(crate) context: Arc<TestContext>,
    pub(crate) timeout: Duration,
    pub(crate) registry: Arc<Mutex<Registry>>,
    pub(crate) state: Mutex<RunState>,
    /// The partition the test's records are on, and its event-time clock.
    pub(crate) partition: i32,
    pub(crate) clocks: Clocks,
}

/// The handle expectations get: wait for signals of the test, read its context.
pub struct Run {
    pub(crate) shared: Arc<RunShared>,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("test_id", &self.shared.context.id)
            .field("case", &self.shared.context.case)
            .finish_non_exhaustive()
    }
}

impl Run {
    /// The test id.
    pub fn test_id(&self) -> &str {
        &self.shared.context.id
    }

    /// The test context.
    pub fn context(&self) -> &TestContext {
        &self.shared.context
    }

    /// Waits for `signal` with the case's timeout, after the previous step by event time (see
    /// [`Run::wait_timeout`]), and returns its value.
    pub async fn wait<T: DeserializeOwned>(&self, signal: &Signal<T>) -> Result<T, CheckError> {
        self.wait_timeout(signal, self.shared.timeout).await
    }

    /// Waits for `signal` at most `timeout` after the previous step (by event time: the
    /// records' own timestamps) and returns its value.
    ///
    /// The step is missing only once the runner has read the signals past that deadline:
    /// a runner that is behind, replaying after a restart, or cut off from the broker does
    /// not time a step out that was sent in time; a step sent after its deadline is late,
    /// whenever it is read.
    pub async fn wait_timeout<T: DeserializeOwned>(
        &self,
        signal: &Signal<T>,
        timeout: Duration,
    ) -> Result<T, CheckError> {
        let name = signal.name();
        let test_id = &self.shared.context.id;
        let deadline = self.previous_at() + TimeDelta::from_std(timeout).unwrap_or(TimeDelta::MAX);
        let start = self
            .shared
            .registry
            .lock()
            .map_err(|_| CheckError::Error("runner state is poisoned".into()))?
            .start_wait(test_id, name);
        let arrival = match start {
            WaitStart::Ready(arrival) => arrival,
            WaitStart::Gone => {
                return Err(CheckError::Error(format!(
                    "test {test_id} is no longer tracked by the runner"
                )))
            }
            WaitStart::Pending(mut rx) => loop {
                let clock = self.shared.clocks.now(self.shared.partition, Utc::now());
                if clock.is_some_and(|c| c >= deadline) {
                    // Give up the wait; a signal that raced the clock is still taken.
                    rx.close();
                    let raced = rx.try_recv();
                    if let Ok(mut registry) = self.shared.registry.lock() {
                        registry.cancel_wait(test_id);
                    }
                    match raced {
                        Ok(arrival) => break arrival,
                        Err(_) => return Err(self.timed_out(name, timeout, None)),
                    }
                }
                // Until the clock can have passed the deadline: it follows the wall clock
                // at most when caught up, and is checked again at least every 2 s.
                let pause = clock
                    .map_or(TimeDelta::milliseconds(200), |c| deadline - c)
                    .to_std()
                    .unwrap_or_default()
                    .clamp(Duration::from_millis(20), Duration::from_secs(2));
                tokio::select! {
                    got = &mut rx => match got {
                        Ok(arrival) => break arrival,
                        Err(_) => {
                            return Err(CheckError::Error(
                                "the runner stopped while the run was waiting".into(),
                            ))
                        }
                    },
                    () = tokio::time::sleep(pause) => {}
                }
            },
        };
        let event_at = arrival.event_at.unwrap_or(arrival.arrived_at);
        if event_at > deadline {
            let late_by = (event_at - deadline).to_std().unwrap_or_default();
            return Err(self.timed_out(name, timeout, Some(late_by)));
        }
        self.record(&arrival);
        serde_json::from_str(arrival.value.get()).map_err(|e| {
            CheckError::Error(format!(
                "value of signal `{name}` ({}) does not decode as {}: {e}",
                truncate(arrival.value.get(), 200),
                std::any::type_name::<T>()
            ))
        })
    }

    fn previous_at(&self) -> DateTime<Utc> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .previous_at
    }

    fn timed_out(&self, name: &str, waited: Duration, late_by: Option<Duration>) -> CheckError {
        let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        state.missing_step = Some(name.to_owned());
        CheckError::Timeout {
            signal: name.to_owned(),
            waited,
            last_step: state.timeline.last().map(|s| s.signal.clone()),
            late_by,
        }
    }

    fn record(&self, arrival: &Arrival) {
        let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.timeline.iter().any(|s| s.signal == arrival.signal) {
            return;
        }
        let event_at = arrival.event_at.unwrap_or(arrival.arrived_at);
        let latency = (event_at - state.previous_at).to_std().unwrap_or_default();
        state.previous_at = state.previous_at.max(event_at);
        state.timeline.push(Step {
            signal: arrival.signal.clone(),
            sent_at: arrival.sent_at,
            arrived_at: arrival.arrived_at,
            event_at: arrival.event_at,
            latency_ms: latency.as_secs_f64() * 1000.0,
            topic: arrival.topic.to_string(),
            partition: arrival.partition,
            offset: arrival.offset,
        });
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
