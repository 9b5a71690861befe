//! `Session::run_once` on the embedded environment with a small in-process app: the
//! stimulus's arguments are on the test context (signed) before its request is sent, so a
//! service that changes the side fails the check; arguments that do not serialize are an
//! `ERROR` naming the case and the serde error. A case routed by a business key
//! ([`Case::route_by`]) gets its route on the context, which the service's trigger keeps.
//! A session creates the changelogs of the tables its cases declare.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use livecheck_core::http::TestContextLayer;
use livecheck_core::signing::SigningKeys;
use livecheck_core::{
    ensure_eq, Case, LiveCheck, Run, Signal, Table, Target, Topics, Trigger, Verdict,
};
use livecheck_harness::{AppHandle, AppStart, EnvironmentConfig, EnvironmentKind, Session};
use rdkafka::consumer::{BaseConsumer, Consumer};

const CASE: &str = "harness.place_order";
const KEYS: &str = "k1:the-shared-secret-of-this-test";

static SIDE_SEEN: Signal<String> = Signal::new(CASE, "side_seen");

const ROUTED: &str = "harness.by_account";
static ROUTE_SEEN: Signal<String> = Signal::new(ROUTED, "route_seen");

/// An app whose `GET /flip/{side}` flips the side and reports its own view consistently:
/// the trigger's arguments and the signal both say the flipped side.
async fn start_app(start: AppStart) -> anyhow::Result<AppHandle> {
    let client = LiveCheck::new(start.kafka, Topics::with_prefix(&start.topic_prefix))?
        .with_signing(SigningKeys::parse(KEYS)?);
    let app_client = client.clone();
    let app = Router::new()
        .route(
            "/flip/{side}",
            get(move |Path(side): Path<String>| {
                let client = app_client.clone();
                async move {
                    let seen = if side == "sell" { "buy" } else { "sell" }.to_owned();
                    if let Some(context) = Trigger::new(CASE).maybe_trigger(&client, &seen) {
                        client.scope(context, SIDE_SEEN.send(&seen)).await;
                    }
                    "ok"
                }
            }),
        )
        .route(
            "/account/{account}",
            get({
                let client = client.clone();
                move |Path(account): Path<String>| {
                    let client = client.clone();
                    async move {
                        let trigger = Trigger::new(ROUTED);
                        // The context that came in is kept, its route included.
                        if let Some(context) =
                            trigger.maybe_trigger_for_key(&client, &account, &account)
                        {
                            let route = context.route.clone().unwrap_or_default();
                            client.scope(context, ROUTE_SEEN.send(&route)).await;
                        }
                        "ok"
                    }
                }
            }),
        )
        .layer(TestContextLayer::new(client.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base_url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(AppHandle::new(base_url, client))
}

fn case() -> Case {
    Case::new(CASE)
        .timeout(Duration::from_secs(5))
        .stimulus_with(
            || "sell",
            |app: Target, side: &'static str| async move {
                app.get(&format!("/flip/{side}")).await.map(drop)
            },
        )
        .expect(|run: Run, side: String| async move {
            let seen = run.wait(&SIDE_SEEN).await?;
            ensure_eq!(
                seen,
                side,
                "the app saw another side than the stimulus chose"
            );
            Ok(())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_puts_the_stimulus_arguments_on_the_signed_context() {
    let config = EnvironmentConfig::new(EnvironmentKind::Embedded)
        .signing_keys(SigningKeys::parse(KEYS).unwrap())
        .embedded_app(start_app);
    let session = Session::start(&config, vec![case()]).await.unwrap();

    let report = session.run_once(&case()).await;
    assert_eq!(report.verdict, Verdict::Fail, "{}", report.render());
    assert_eq!(
        report.error.as_deref(),
        Some("the app saw another side than the stimulus chose: expected \"sell\", got \"buy\"")
    );
    assert_eq!(report.arguments, serde_json::json!("sell"));

    let unserializable = Case::new(CASE)
        .stimulus_with(
            || HashMap::from([((1, 2), "sell")]),
            |app: Target, _| async move { app.get("/flip/sell").await.map(drop) },
        )
        .expect(|_: Run, (): ()| async { Ok(()) });
    let report = session.run_once(&unserializable).await;
    assert_eq!(report.verdict, Verdict::Error, "{}", report.render());
    assert_eq!(report.case, CASE);
    assert_eq!(
        report.error.as_deref(),
        Some("stimulus failed: the arguments of case harness.place_order do not serialize: key must be a string")
    );
    session.close().await;
}

fn routed_case() -> Case {
    Case::new(ROUTED)
        .timeout(Duration::from_secs(5))
        .route_by(|account: &String| account.clone())
        .stimulus_with(
            || "account-7".to_owned(),
            |app: Target, account: String| async move {
                app.get(&format!("/account/{account}")).await.map(drop)
            },
        )
        .expect(|run: Run, account: String| async move {
            let seen = run.wait(&ROUTE_SEEN).await?;
            ensure_eq!(seen, account, "the app saw another route");
            Ok(())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_routes_the_context_by_the_case_rule() {
    let config = EnvironmentConfig::new(EnvironmentKind::Embedded)
        .signing_keys(SigningKeys::parse(KEYS).unwrap())
        .embedded_app(start_app);
    let session = Session::start(&config, vec![routed_case()]).await.unwrap();

    let report = session.run_once(&routed_case()).await;
    assert_eq!(report.verdict, Verdict::Pass, "{}", report.render());
    assert_eq!(report.route.as_deref(), Some("account-7"));
    let partition = livecheck_core::murmur2::partition_for(b"account-7", 4);
    assert!(
        report.timeline.iter().all(|s| s.partition == partition),
        "{}",
        report.render()
    );

    // A rule that fails on the stimulus's arguments: no request, an ERROR naming the case.
    let failing = Case::new(ROUTED)
        .route_by(|n: &u64| n.to_string())
        .stimulus_with(
            || "account-7",
            |app: Target, _| async move { app.get("/account/account-7").await.map(drop) },
        )
        .expect(|_: Run, (): ()| async { Ok(()) });
    let report = session.run_once(&failing).await;
    assert_eq!(report.verdict, Verdict::Error, "{}", report.render());
    let error = report.error.unwrap_or_default();
    assert!(
        error.starts_with(
            "stimulus failed: the route of case harness.by_account does not follow from its arguments: test arguments \"account-7\" do not decode as u64"
        ),
        "{error}"
    );
    session.close().await;
}

/// Visits per account: the table of [`counting_case`].
static VISITS: Table<String, u64> = Table::new("visits");

/// The routed case, counting each account's visits in a table.
fn counting_case() -> Case {
    routed_case()
        .table(&VISITS)
        .expect(|run: Run, account: String| async move {
            run.wait(&ROUTE_SEEN).await?;
            run.table(&VISITS)
                .update(account, |visits| visits.unwrap_or(0) + 1)?;
            Ok(())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_creates_the_changelogs_of_its_cases_tables() {
    // Three partitions: a changelog with any other count would stop the runner.
    let config = EnvironmentConfig::new(EnvironmentKind::Embedded)
        .partitions(3)
        .signing_keys(SigningKeys::parse(KEYS).unwrap())
        .embedded_app(start_app);
    let session = Session::start(&config, vec![counting_case()])
        .await
        .unwrap();
    for _ in 0..2 {
        let report = session.run_once(&counting_case()).await;
        assert_eq!(report.verdict, Verdict::Pass, "{}", report.render());
    }
    let env = session.environment();
    let changelog = env.topics.table("visits");
    let consumer: BaseConsumer = env.kafka.client_config(&[]).create().unwrap();
    let metadata = consumer
        .fetch_metadata(Some(&changelog), Duration::from_secs(10))
        .unwrap();
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == changelog)
        .map(|t| t.partitions().len());
    assert_eq!(partitions, Some(3), "{changelog}");
    assert_eq!(session.runner().tables()[0].entries, 1);
    session.close().await;
}
