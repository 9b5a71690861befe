//! `ledger gateway|booker|store`: one binary for the ledger's three services. Each reads
//! the broker and topic prefix from the flags or from what the LiveCheck harness hands a
//! service (`LIVECHECK_BROKERS`, `LIVECHECK_TOPIC_PREFIX`, `LIVECHECK_KAFKA`).

use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use ledger::settings::Settings;

#[derive(Parser)]
#[command(name = "ledger", about = "The ledger's services")]
struct Args {
    /// Bootstrap servers.
    #[arg(long, env = "LIVECHECK_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Prefix of every topic name.
    #[arg(long, env = "LIVECHECK_TOPIC_PREFIX", default_value = "")]
    topic_prefix: String,
    /// Kafka client properties, `key=value,key=value`.
    #[arg(
        long,
        env = "LIVECHECK_KAFKA",
        default_value = "",
        hide_env_values = true
    )]
    kafka: String,
    #[command(subcommand)]
    service: Service,
}

#[derive(Subcommand)]
enum Service {
    /// The HTTP gateway.
    Gateway {
        /// Port on 127.0.0.1.
        #[arg(long, default_value_t = 7070)]
        port: u16,
        /// Share of real transfers that become tests.
        #[arg(long, default_value_t = 0.0)]
        probability: f64,
    },
    /// The consumer that books transfers.
    Booker {
        /// The store's base URL.
        #[arg(long)]
        store: String,
    },
    /// The balance store.
    Store {
        /// Port on 127.0.0.1.
        #[arg(long, default_value_t = 7071)]
        port: u16,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = Settings::new(&args.brokers, &args.topic_prefix, &args.kafka)?;
    let serve = |port: u16, router: axum::Router| async move {
        let listener =
            tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
        println!("ledger listening on {}", listener.local_addr()?);
        axum::serve(listener, router).await?;
        anyhow::Ok(())
    };
    match args.service {
        Service::Gateway { port, probability } => {
            serve(port, ledger::gateway::router(&settings, probability)?).await
        }
        Service::Booker { store } => ledger::booker::run(&settings, &store).await,
        Service::Store { port } => serve(port, ledger::store::router()).await,
    }
}
