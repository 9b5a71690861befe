//! The embedded broker: librdkafka's mock cluster, in-process, speaking the real Kafka
//! protocol on loopback.
//!
//! The mock cluster is not `Send`, so it lives on a thread of its own; this handle only
//! carries the bootstrap address and a command channel, and can go anywhere.

use std::sync::mpsc;
use std::thread::JoinHandle;

use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use tracing::info;

use crate::client::Topics;
use crate::error::Error;
use crate::table::TableSpec;

/// How long a dropped broker keeps serving, so that clients dropped after it (e.g. by a
/// runtime shutting down) can still close: a consumer whose broker vanished never finishes
/// closing.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

enum Command {
    CreateTopic {
        name: String,
        partitions: i32,
        reply: mpsc::Sender<Result<(), String>>,
    },
    BrokersDown {
        down: bool,
        reply: mpsc::Sender<Result<(), String>>,
    },
    FailRequests {
        api: RDKafkaApiKey,
        errors: Vec<RDKafkaRespErr>,
        reply: mpsc::Sender<()>,
    },
    ClearRequestErrors {
        api: RDKafkaApiKey,
        reply: mpsc::Sender<()>,
    },
    Shutdown,
}

/// Brokers of the mock cluster (ids `1..=BROKERS`).
const BROKERS: i32 = 1;

/// A running mock cluster. Dropping the handle stops it.
#[derive(Debug)]
pub struct EmbeddedBroker {
    bootstrap: String,
    commands: mpsc::Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts a mock cluster of one broker.
    pub fn start() -> Result<Self, Error> {
        let (commands, rx) = mpsc::channel::<Command>();
        let (started_tx, started_rx) = mpsc::channel::<Result<String, String>>();
        let thread = std::thread::Builder::new()
            .name("livecheck-embedded-broker".into())
            .spawn(move || {
                let cluster = match MockCluster::new(BROKERS) {
                    Ok(cluster) => cluster,
                    Err(err) => {
                        let _ = started_tx.send(Err(err.to_string()));
                        return;
                    }
                };
                let _ = started_tx.send(Ok(cluster.bootstrap_servers()));
                while let Ok(command) = rx.recv() {
                    match command {
                        Command::CreateTopic {
                            name,
                            partitions,
                            reply,
                        } => {
                            let result = cluster
                                .create_topic(&name, partitions, 1)
                                .map_err(|e| e.to_string());
                            let _ = reply.send(result);
                        }
                        Command::BrokersDown { down, reply } => {
                            let result = (1..=BROKERS).try_for_each(|id| {
                                if down {
                                    cluster.broker_down(id)
                                } else {
                                    cluster.broker_up(id)
                                }
                                .map_err(|e| format!("broker {id}: {e}"))
                            });
                            let _ = reply.send(result);
                        }
                        Command::FailRequests { api, errors, reply } => {
                            cluster.request_errors(api, &errors);
                            let _ = reply.send(());
                        }
                        Command::ClearRequestErrors { api, reply } => {
                            cluster.clear_request_errors(api);
                            let _ = reply.send(());
                        }
                        Command::Shutdown => {
                            // Clients still closing need their broker: destroy it later.
                            std::thread::sleep(SHUTDOWN_GRACE);
                            break;
                        }
                    }
                }
            })
            .map_err(|e| Error::Embedded(format!("cannot start its thread: {e}")))?;
        let bootstrap = started_rx
            .recv()
            .map_err(|_| Error::Embedded("its thread ended before it started".into()))?
            .map_err(|e| Error::Embedded(format!("the mock cluster did not start: {e}")))?;
        info!(%bootstrap, "embedded Kafka broker (librdkafka mock cluster) started");
        Ok(Self {
            bootstrap,
            commands,
            thread: Some(thread),
        })
    }

    /// Starts a mock cluster with the LiveCheck topics ([`EmbeddedBroker::create_topics`])
    /// and `extra` topics created, these with `partitions` partitions.
    pub fn with_topics(topics: &Topics, extra: &[&str], partitions: i32) -> Result<Self, Error> {
        let broker = Self::start()?;
        broker.create_topics(topics, partitions)?;
        for name in extra {
            broker.create_topic(name, partitions)?;
        }
        Ok(broker)
    }

    /// Creates the LiveCheck topics: tests, signals and reports with `partitions`
    /// partitions, control and heartbeats with one (the mock does not compact; a real
    /// cluster's are `cleanup.policy=compact`).
    pub fn create_topics(&self, topics: &Topics, partitions: i32) -> Result<(), Error> {
        for name in topics.all() {
            self.create_topic(name, partitions)?;
        }
        for name in topics.settings_topics() {
            self.create_topic(name, 1)?;
        }
        Ok(())
    }

    /// Creates the changelog of each table ([`Topics::table`]) with `partitions` partitions,
    /// the tests topic's count (the runner requires it; the mock does not compact, a real
    /// cluster's are `cleanup.policy=compact`).
    pub fn create_tables(
        &self,
        topics: &Topics,
        tables: &[TableSpec],
        partitions: i32,
    ) -> Result<(), Error> {
        for table in tables {
            self.create_topic(&topics.table(table.name), partitions)?;
        }
        Ok(())
    }

    /// The bootstrap servers (`127.0.0.1:PORT`).
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Creates a topic (the mock does not implement the admin API).
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), Error> {
        self.ask(|reply| Command::CreateTopic {
            name: name.to_owned(),
            partitions,
            reply,
        })?
        .map_err(|e| Error::Embedded(format!("cannot create topic {name}: {e}")))
    }

    /// Sends the broker thread the command `command` builds around a reply channel; its
    /// reply.
    fn ask<T>(&self, command: impl FnOnce(mpsc::Sender<T>) -> Command) -> Result<T, Error> {
        let gone = || Error::Embedded("the broker thread is gone".into());
        let (reply, rx) = mpsc::channel();
        self.commands.send(command(reply)).map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())
    }
}

impl EmbeddedBroker {
    /// Takes every broker of the cluster down (connections closed, new ones refused) or
    /// brings them up again: fault injection for outage tests.
    pub fn set_brokers_down(&self, down: bool) -> Result<(), Error> {
        self.ask(|reply| Command::BrokersDown { down, reply })?
            .map_err(|e| {
                Error::Embedded(format!(
                    "cannot take the brokers {}: {e}",
                    if down { "down" } else { "up" }
                ))
            })
    }
}

impl EmbeddedBroker {
    /// Makes the next `errors.len()` requests of kind `api`, from any client, fail with
    /// those errors in turn (fault injection: e.g. offset commits refused as during a
    /// rebalance, with `RDKafkaApiKey::OffsetCommit` and
    /// `RDKafkaRespErr::RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS`).
    pub fn fail_requests(
        &self,
        api: RDKafkaApiKey,
        errors: &[RDKafkaRespErr],
    ) -> Result<(), Error> {
        self.ask(|reply| Command::FailRequests {
            api,
            errors: errors.to_vec(),
            reply,
        })
    }

    /// Drops the errors [`EmbeddedBroker::fail_requests`] queued for `api` that no request
    /// has met yet: requests of that kind succeed again from now on.
    pub fn clear_request_errors(&self, api: RDKafkaApiKey) -> Result<(), Error> {
        self.ask(|reply| Command::ClearRequestErrors { api, reply })
    }
}

impl Drop for EmbeddedBroker {
    /// Asks the broker thread to stop after a grace period and does not wait for it: its
    /// clients may be owned by tasks of the runtime this drop runs on, and close later.
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
        drop(self.thread.take());
    }
}
