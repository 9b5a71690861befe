//! The booker: reads the `transfers` topic in a consumer group, debits and credits the
//! accounts in the store, and says so (`BOOKED`) in the test's scope the record carried.

use anyhow::Context as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;

use crate::settings::Settings;
use crate::signals::{Booked, Transfer, BOOKED};

/// What the booker prints once it reads the topic (its readiness line).
pub const READY_LINE: &str = "ledger booker consuming";

/// Books every transfer of `settings`' topic against the store at `store_url`, until the
/// consumer fails.
pub async fn run(settings: &Settings, store_url: &str) -> anyhow::Result<()> {
    let client = settings.client("booker")?;
    let group = format!("{}booker", settings.prefix);
    let consumer: StreamConsumer = settings
        .kafka
        .client_config(&[
            ("group.id", &group),
            ("auto.offset.reset", "earliest"),
            ("session.timeout.ms", "6000"),
        ])
        .create()?;
    consumer.subscribe(&[&settings.transfers_topic()])?;
    println!("{READY_LINE}");
    let http = reqwest::Client::new();
    loop {
        let message = consumer.recv().await?;
        let Some(Ok(transfer)) = message.payload().map(serde_json::from_slice::<Transfer>) else {
            continue;
        };
        let booked = client
            .consume(&group, &message, book(&http, store_url, &transfer))
            .await;
        if let Err(err) = booked {
            eprintln!("booker: transfer not booked: {err:#}");
        }
    }
}

async fn book(http: &reqwest::Client, store: &str, t: &Transfer) -> anyhow::Result<()> {
    let add = |account: &str, cents: i64| {
        let url = format!("{store}/add/{account}/{cents}");
        async move {
            http.get(&url)
                .send()
                .await?
                .error_for_status()?
                .json::<i64>()
                .await
                .with_context(|| format!("GET {url}"))
        }
    };
    let from_balance = add(&t.from, -t.amount).await?;
    let to_balance = add(&t.to, t.amount).await?;
    BOOKED
        .send(&Booked {
            amount: t.amount,
            from_balance,
            to_balance,
        })
        .await;
    Ok(())
}
