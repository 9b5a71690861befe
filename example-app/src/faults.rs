//! Faults to switch on, so that checks can be tested against a broken system.
//! Each can be set at start (flag or environment variable) and changed at run time
//! (`POST /admin/faults`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tracing::warn;

/// A snapshot of the fault switches (also the body of `POST /admin/faults`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(default)]
pub struct FaultConfig {
    /// Flip the order side in the create step.
    #[arg(long = "fault-flip-side", env = "EXAMPLE_FAULT_FLIP_SIDE", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    pub flip_side: bool,
    /// Misread the side at the HTTP front, before the trigger: the order and the service's
    /// own test arguments both say the other side (only the stimulus's arguments catch it).
    #[arg(long = "fault-misread-side", env = "EXAMPLE_FAULT_MISREAD_SIDE", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    pub misread_side: bool,
    /// Skip the execution step.
    #[arg(long = "fault-skip-execution", env = "EXAMPLE_FAULT_SKIP_EXECUTION", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    pub skip_execution: bool,
    /// Delay the execution step by this many milliseconds.
    #[arg(
        long = "fault-delay-ms",
        env = "EXAMPLE_FAULT_DELAY_MS",
        default_value_t = 0
    )]
    pub delay_ms: u64,
    /// Execute each order twice (and signal each execution): the at-least-once bug of a
    /// consumer that handles a record again.
    #[arg(long = "fault-execute-twice", env = "EXAMPLE_FAULT_EXECUTE_TWICE", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    pub execute_twice: bool,
    /// Drop the test headers between the two Kafka hops.
    #[arg(long = "fault-drop-headers", env = "EXAMPLE_FAULT_DROP_HEADERS", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    pub drop_headers: bool,
    /// Stop the execute-order consumer: it reads nothing while this is on (its records wait
    /// in the execution topic).
    #[arg(long = "fault-stop-execute-consumer", env = "EXAMPLE_FAULT_STOP_EXECUTE_CONSUMER", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    pub stop_execute_consumer: bool,
    /// Make the HTTP front answer 503.
    #[arg(long = "fault-http-503", env = "EXAMPLE_FAULT_HTTP_503", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    pub http_503: bool,
    /// Ignore the sell limit: accept every sell order, whatever the user has sold.
    #[arg(long = "fault-ignore-sell-limit", env = "EXAMPLE_FAULT_IGNORE_SELL_LIMIT", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    pub ignore_sell_limit: bool,
}

impl FaultConfig {
    /// Switches from environment-style pairs (`EXAMPLE_FAULT_FLIP_SIDE=1`, ...), as the
    /// container image reads them. Unknown keys and bad values are errors.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, String> {
        let mut config = Self::default();
        for (key, value) in pairs {
            let flag = || match value.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" | "" => Ok(false),
                other => Err(format!("{key}={other:?} is not a boolean (use 1 or 0)")),
            };
            match key {
                "EXAMPLE_FAULT_FLIP_SIDE" => config.flip_side = flag()?,
                "EXAMPLE_FAULT_MISREAD_SIDE" => config.misread_side = flag()?,
                "EXAMPLE_FAULT_SKIP_EXECUTION" => config.skip_execution = flag()?,
                "EXAMPLE_FAULT_EXECUTE_TWICE" => config.execute_twice = flag()?,
                "EXAMPLE_FAULT_DROP_HEADERS" => config.drop_headers = flag()?,
                "EXAMPLE_FAULT_HTTP_503" => config.http_503 = flag()?,
                "EXAMPLE_FAULT_IGNORE_SELL_LIMIT" => config.ignore_sell_limit = flag()?,
                "EXAMPLE_FAULT_STOP_EXECUTE_CONSUMER" => config.stop_execute_consumer = flag()?,
                "EXAMPLE_FAULT_DELAY_MS" => {
                    config.delay_ms = value
                        .trim()
                        .parse()
                        .map_err(|_| format!("{key}={value:?} is not a number of milliseconds"))?;
                }
                other => return Err(format!("unknown fault setting {other}")),
            }
        }
        Ok(config)
    }
}

/// The live switches.
#[derive(Debug, Default)]
pub struct Faults {
    flip_side: AtomicBool,
    misread_side: AtomicBool,
    skip_execution: AtomicBool,
    execute_twice: AtomicBool,
    delay_ms: AtomicU64,
    drop_headers: AtomicBool,
    stop_execute_consumer: AtomicBool,
    http_503: AtomicBool,
    ignore_sell_limit: AtomicBool,
}

impl Faults {
    /// Switches set as in `config`.
    pub fn new(config: &FaultConfig) -> Self {
        let faults = Self::default();
        faults.set(config);
        faults
    }

    /// Sets every switch; logs loudly each one that is on.
    pub fn set(&self, config: &FaultConfig) {
        self.flip_side.store(config.flip_side, Ordering::Relaxed);
        self.misread_side
            .store(config.misread_side, Ordering::Relaxed);
        self.skip_execution
            .store(config.skip_execution, Ordering::Relaxed);
        self.execute_twice
            .store(config.execute_twice, Ordering::Relaxed);
        self.delay_ms.store(config.delay_ms, Ordering::Relaxed);
        self.drop_headers
            .store(config.drop_headers, Ordering::Relaxed);
        self.stop_execute_consumer
            .store(config.stop_execute_consumer, Ordering::Relaxed);
        self.http_503.store(config.http_503, Ordering::Relaxed);
        self.ignore_sell_limit
            .store(config.ignore_sell_limit, Ordering::Relaxed);
        let on = self.describe();
        if !on.is_empty() {
            warn!(
                "FAULTS SWITCHED ON: {} — this app is broken on purpose",
                on.join(", ")
            );
        }
    }

    /// The switches now.
    pub fn get(&self) -> FaultConfig {
        FaultConfig {
            flip_side: self.flip_side(),
            misread_side: self.misread_side(),
            skip_execution: self.skip_execution(),
            execute_twice: self.execute_twice(),
            delay_ms: self.delay_ms(),
            drop_headers: self.drop_headers(),
            stop_execute_consumer: self.stop_execute_consumer(),
            http_503: self.http_503(),
            ignore_sell_limit: self.ignore_sell_limit(),
        }
    }

    fn describe(&self) -> Vec<String> {
        let c = self.get();
        let mut on = Vec::new();
        if c.flip_side {
            on.push("flip-side".to_owned());
        }
        if c.misread_side {
            on.push("misread-side".to_owned());
        }
        if c.skip_execution {
            on.push("skip-execution".to_owned());
        }
        if c.execute_twice {
            on.push("execute-twice".to_owned());
        }
        if c.delay_ms > 0 {
            on.push(format!("delay-execution {} ms", c.delay_ms));
        }
        if c.drop_headers {
            on.push("drop-headers".to_owned());
        }
        if c.stop_execute_consumer {
            on.push("stop-execute-consumer".to_owned());
        }
        if c.http_503 {
            on.push("http-503".to_owned());
        }
        if c.ignore_sell_limit {
            on.push("ignore-sell-limit".to_owned());
        }
        on
    }

    /// Flip the side in the create step?
    pub fn flip_side(&self) -> bool {
        self.flip_side.load(Ordering::Relaxed)
    }
    /// Misread the side at the HTTP front?
    pub fn misread_side(&self) -> bool {
        self.misread_side.load(Ordering::Relaxed)
    }
    /// Skip execution?
    pub fn skip_execution(&self) -> bool {
        self.skip_execution.load(Ordering::Relaxed)
    }
    /// Execute each order twice?
    pub fn execute_twice(&self) -> bool {
        self.execute_twice.load(Ordering::Relaxed)
    }
    /// Delay of the execution step.
    pub fn delay_ms(&self) -> u64 {
        self.delay_ms.load(Ordering::Relaxed)
    }
    /// Drop headers between the Kafka hops?
    pub fn drop_headers(&self) -> bool {
        self.drop_headers.load(Ordering::Relaxed)
    }
    /// Is the execute-order consumer stopped?
    pub fn stop_execute_consumer(&self) -> bool {
        self.stop_execute_consumer.load(Ordering::Relaxed)
    }
    /// Answer 503?
    pub fn http_503(&self) -> bool {
        self.http_503.load(Ordering::Relaxed)
    }
    /// Accept every sell order, whatever the sell limit says?
    pub fn ignore_sell_limit(&self) -> bool {
        self.ignore_sell_limit.load(Ordering::Relaxed)
    }
}
