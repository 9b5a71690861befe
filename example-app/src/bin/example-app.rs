//! The example app as a service: `example-app [--brokers HOST:PORT] [--port 6066]`.

use std::io::IsTerminal as _;
use std::net::{IpAddr, SocketAddr};

use clap::Parser;
use example_app::{AppConfig, AppTopics, Execution, FaultConfig, RunningApp};
use livecheck_core::signing::{SecretString, SigningKeys};
use livecheck_core::{ControlOptions, KafkaConfig};

/// The stock-ordering system of the LiveCheck tutorial, instrumented.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Kafka bootstrap servers; without it an embedded broker is started.
    #[arg(long, env = "EXAMPLE_BROKERS")]
    brokers: Option<String>,
    /// HTTP address to bind.
    #[arg(long, env = "EXAMPLE_HOST", default_value = "127.0.0.1")]
    host: IpAddr,
    /// HTTP port.
    #[arg(long, env = "EXAMPLE_PORT", default_value_t = 6066)]
    port: u16,
    /// Prefix of every topic name.
    #[arg(long, env = "EXAMPLE_TOPIC_PREFIX", default_value = "")]
    topic_prefix: String,
    /// Share of users whose orders become tests (orders are sampled by user), 0 to 1: the
    /// local default, which the control topic's setting for the case overrides while the
    /// app follows it.
    #[arg(long, env = "EXAMPLE_PROBABILITY", default_value_t = 0.5)]
    probability: f64,
    /// Fault switches.
    #[command(flatten)]
    faults: FaultConfig,
    /// Turn on the test hooks: `POST /admin/faults` and `?fake=1` (off: 404 and ignored).
    #[arg(long, env = "EXAMPLE_APP_TEST_HOOKS", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    test_hooks: bool,
    /// Service name for LiveCheck's control topic and heartbeats.
    #[arg(long, env = "EXAMPLE_SERVICE_NAME", default_value = example_app::app::SERVICE_NAME)]
    service_name: String,
    /// This instance's name in heartbeats (default: host name and process id).
    #[arg(long, env = "EXAMPLE_INSTANCE")]
    instance: Option<String>,
    /// Do not follow LiveCheck's control topic: sample with --probability only.
    #[arg(long, env = "EXAMPLE_NO_CONTROL", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    no_control: bool,
    /// LiveCheck signing keys, `kid:secret[,kid:secret...]` (the first signs): only signed
    /// test contexts are accepted.
    #[arg(long, env = "LIVECHECK_SIGNING_KEYS", hide_env_values = true)]
    signing_keys: Option<SecretString>,
    /// How orders are executed: by the execute-order Kafka consumer itself, or as a
    /// background job in the same process (apalis, in memory) that the consumer enqueues.
    #[arg(long, env = "EXAMPLE_EXECUTION", value_enum, default_value = "kafka")]
    execution: Execution,
    /// `fetch.wait.max.ms` of the app's consumers, in milliseconds: how long the broker may
    /// hold an empty fetch. Shorter: faster hops on brokers that hold fetches (tansu, the
    /// embedded one), more fetches while idle. The LiveCheck runner's default is the same.
    #[arg(long, env = "EXAMPLE_FETCH_WAIT_MS", default_value_t = livecheck_core::DEFAULT_FETCH_WAIT.as_millis() as u64)]
    fetch_wait_ms: u64,
    /// The most a user may sell in total: a sell order that would take the user's sold
    /// quantity above it is refused (HTTP 409).
    #[arg(long, env = "EXAMPLE_SELL_LIMIT", default_value_t = example_app::DEFAULT_SELL_LIMIT)]
    sell_limit: u64,
    /// Share of users whose sell orders become tests of `orders.sell_limit` (sampled by
    /// user), 0 to 1: the local default, which the control topic's setting for the case
    /// overrides while the app follows it.
    #[arg(long, env = "EXAMPLE_SELL_LIMIT_PROBABILITY", default_value_t = 0.5)]
    sell_limit_probability: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rdkafka=warn".into()),
        )
        // Colours on a terminal only (never in pipes and log files, nor with NO_COLOR).
        .with_ansi(std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
    let args = Args::parse();
    if !(0.0..=1.0).contains(&args.probability) {
        anyhow::bail!(
            "--probability must be between 0 and 1, not {}",
            args.probability
        );
    }
    if !(0.0..=1.0).contains(&args.sell_limit_probability) {
        anyhow::bail!(
            "--sell-limit-probability must be between 0 and 1, not {}",
            args.sell_limit_probability
        );
    }
    let mut config = AppConfig::new(KafkaConfig::new(args.brokers.clone().unwrap_or_default()));
    config.listen = SocketAddr::new(args.host, args.port);
    config.topics = AppTopics::with_prefix(&args.topic_prefix);
    config.probability = args.probability;
    config.faults = args.faults;
    config.test_hooks = args.test_hooks;
    config.execution = args.execution;
    config.fetch_wait = std::time::Duration::from_millis(args.fetch_wait_ms);
    config.sell_limit = args.sell_limit;
    config.sell_limit_probability = args.sell_limit_probability;
    config.control = (!args.no_control).then(|| {
        let options = ControlOptions::new(args.service_name.clone());
        match args.instance.clone() {
            Some(instance) => options.instance(instance),
            None => options,
        }
    });
    config.signing_keys = match args.signing_keys.as_ref().map(|s| s.expose().trim()) {
        None | Some("") => None,
        // Parsed here, not by clap: clap's error would print the value, secrets included.
        Some(spec) => Some(
            SigningKeys::parse(spec)
                .map_err(|e| anyhow::anyhow!("--signing-keys is invalid: {e}"))?,
        ),
    };
    let app = match args.brokers {
        Some(_) => RunningApp::start(config).await?,
        None => RunningApp::start_embedded(config).await?,
    };
    println!("example-app listening on {}", app.base_url);
    println!("kafka bootstrap servers: {}", app.brokers());
    println!(
        "try: curl '{}/order/init/sell/?user=alice&quantity=40'",
        app.base_url
    );
    tokio::signal::ctrl_c().await?;
    app.stop().await;
    Ok(())
}
