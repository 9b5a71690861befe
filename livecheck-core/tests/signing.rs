//! Signed test contexts end to end: through a real axum server (the tower layer) and through
//! real Kafka record headers on the embedded broker. With signing keys, unsigned, forged,
//! tampered, expired, oversized and otherwise bad contexts are handled as non-test requests
//! and counted by reason; without keys, contexts are accepted as before.

mod support;

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use chrono::Duration as ChronoDuration;
use livecheck_core::counters::ClientCounters;
use livecheck_core::http::{RequestBuilderExt as _, TestContextLayer};
use livecheck_core::signing::SigningKeys;
use livecheck_core::{
    current_test, headers, kafka, EmbeddedBroker, KafkaConfig, LiveCheck, TestContext, Topics,
    Trigger,
};
use rdkafka::message::OwnedHeaders;

const CASE: &str = "signing.probe";
const SECRET: &str = "the-shared-secret-of-this-test";

fn keys() -> SigningKeys {
    SigningKeys::new("k1", SECRET).unwrap()
}

/// A client that never needs its broker (nothing here is flushed).
fn offline_client() -> LiveCheck {
    LiveCheck::new(KafkaConfig::new("127.0.0.1:1"), Topics::default()).unwrap()
}

fn fresh() -> TestContext {
    TestContext::new(CASE, Duration::from_secs(60))
}

/// Each way a context can be bad when signing is on, with the counter it must land in.
/// The header lists are what goes on the wire (HTTP headers or Kafka record headers).
fn bad_contexts() -> Vec<(&'static str, Vec<(&'static str, String)>)> {
    let keys = keys();
    let sign = |mut c: TestContext| {
        c.signature = Some(keys.sign(&c));
        c
    };
    let unsigned = headers::encode(&fresh());
    let forged = {
        let mut c = fresh();
        c.signature = Some(
            SigningKeys::new("k1", "a-guessed-secret-0000")
                .unwrap()
                .sign(&c),
        );
        headers::encode(&c)
    };
    let unknown_kid = {
        let mut c = fresh();
        c.signature = Some(SigningKeys::new("k7", SECRET).unwrap().sign(&c));
        headers::encode(&c)
    };
    let tampered_id = {
        let mut c = sign(fresh());
        c.id = "chosen-by-the-forger".into();
        headers::encode(&c)
    };
    let tampered_case = {
        let mut c = sign(fresh());
        c.case = "payments.refund".into();
        headers::encode(&c)
    };
    let tampered_expiry = {
        let mut c = sign(fresh());
        c.expires_at += ChronoDuration::days(30);
        headers::encode(&c)
    };
    let expired = {
        let mut c = fresh();
        c.issued_at -= ChronoDuration::hours(2);
        c.expires_at = c.issued_at + ChronoDuration::minutes(1);
        headers::encode(&sign(c))
    };
    let oversized = {
        let mut h = headers::encode(&sign(fresh()));
        h[1].1 = "x".repeat(headers::MAX_VALUE_LEN + 1);
        h
    };
    let malformed_signature = {
        let mut h = headers::encode(&sign(fresh()));
        h[4].1 = "v1;kid=k1;sig=not-base64!".into();
        h
    };
    let bad_id = {
        let mut c = fresh();
        c.id = "two words".into();
        headers::encode(&sign(c))
    };
    let duplicate_id = {
        let mut h = headers::encode(&sign(fresh()));
        h.push((headers::TEST_ID, "another-id".into()));
        h
    };
    let missing_expiry = {
        let mut h = headers::encode(&sign(fresh()));
        h.remove(3);
        h
    };
    vec![
        ("contexts_rejected_unsigned", unsigned),
        ("contexts_rejected_bad_signature", forged),
        ("contexts_rejected_unknown_key", unknown_kid),
        ("contexts_rejected_bad_signature", tampered_id),
        ("contexts_rejected_bad_signature", tampered_case),
        ("contexts_rejected_bad_signature", tampered_expiry),
        ("contexts_rejected_expired", expired),
        ("contexts_rejected_oversized", oversized),
        ("contexts_rejected_malformed_signature", malformed_signature),
        ("contexts_rejected_bad_test_id", bad_id),
        ("contexts_rejected_duplicate_header", duplicate_id),
        ("contexts_rejected_malformed", missing_expiry),
    ]
}

fn counter(counters: &ClientCounters, name: &str) -> u64 {
    counters
        .snapshot()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no counter {name}"))
}

/// Every `contexts_rejected*` counter that is not zero.
fn rejections(counters: &ClientCounters) -> Vec<(&'static str, u64)> {
    counters
        .snapshot()
        .into_iter()
        .filter(|(n, v)| n.starts_with("contexts_rejected") && *v > 0)
        .collect()
}

/// An axum server behind the layer whose handler answers the id of its test, or `none`.
async fn start_server(client: LiveCheck) -> String {
    let app = Router::new()
        .route(
            "/probe",
            get(|| async { current_test().map_or_else(|| "none".to_owned(), |c| c.id.clone()) }),
        )
        .layer(TestContextLayer::new(client));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/probe", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn get_with(url: &str, header_list: &[(&'static str, String)]) -> (u16, String) {
    let mut request = reqwest::Client::new().get(url);
    for (name, value) in header_list {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn http_with_signing_on_bad_contexts_are_non_test_requests_counted_by_reason() {
    let client = offline_client().with_signing(keys());
    let url = start_server(client.clone()).await;

    // A signed context is accepted, and its signature goes on with the next hop.
    let good = client.sign(fresh());
    let (status, body) = get_with(&url, &headers::encode(&good)).await;
    assert_eq!((status, body.as_str()), (200, good.id.as_str()));
    let (status, body) = client
        .scope(good.clone(), async {
            let response = reqwest::Client::new()
                .get(&url)
                .test_context()
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        })
        .await;
    assert_eq!((status, body.as_str()), (200, good.id.as_str()));
    assert_eq!(rejections(client.counters()), []);

    let cases = bad_contexts();
    for (i, (reason, header_list)) in cases.iter().enumerate() {
        let before = counter(client.counters(), reason);
        let (status, body) = get_with(&url, header_list).await;
        assert_eq!(
            (status, body.as_str()),
            (200, "none"),
            "{reason}: {header_list:?}"
        );
        assert_eq!(
            counter(client.counters(), reason),
            before + 1,
            "{reason}: {header_list:?}"
        );
        assert_eq!(
            counter(client.counters(), "contexts_rejected"),
            i as u64 + 1
        );
    }
    // The total is the sum of the reasons.
    let by_reason: u64 = rejections(client.counters())
        .iter()
        .filter(|(n, _)| *n != "contexts_rejected")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(by_reason, cases.len() as u64);
}

#[tokio::test]
async fn http_with_signing_off_is_unchanged() {
    let client = offline_client();
    let url = start_server(client.clone()).await;
    let unsigned = fresh();
    let (_, body) = get_with(&url, &headers::encode(&unsigned)).await;
    assert_eq!(body, unsigned.id);
    // A signature nobody checks is carried, not judged; an expired context is accepted.
    let mut forged = fresh();
    forged.signature = Some("v1;kid=k1;sig=AAAA".into());
    let (_, body) = get_with(&url, &headers::encode(&forged)).await;
    assert_eq!(body, forged.id);
    let mut expired = fresh();
    expired.issued_at -= ChronoDuration::hours(2);
    expired.expires_at = expired.issued_at;
    let (_, body) = get_with(&url, &headers::encode(&expired)).await;
    assert_eq!(body, expired.id);
    assert_eq!(rejections(client.counters()), []);
    let (_, body) = get_with(&url, &[]).await;
    assert_eq!(body, "none");
}

#[tokio::test]
async fn triggers_sign_what_they_create_and_keep_what_came_in() {
    let client = offline_client().with_signing(keys());
    let trigger = Trigger::new(CASE);
    let created = trigger.maybe_trigger(&client, &"sell").unwrap();
    assert_eq!(client.verify_context(&created), Ok(()));
    // The TestExecution record carries the signature.
    let record: TestContext =
        serde_json::from_slice(&serde_json::to_vec(&created).unwrap()).unwrap();
    assert_eq!(client.verify_context(&record), Ok(()));
    // A context that came in keeps its signature.
    let incoming = client.sign(fresh());
    let propagated = client
        .scope(incoming.clone(), async {
            trigger.maybe_trigger(&client, &"buy").unwrap()
        })
        .await;
    assert_eq!(propagated.signature, incoming.signature);
    // A caller-chosen id must be a valid test id.
    assert!(trigger
        .maybe_trigger_with_id(&client, Some("has space"), &"buy")
        .is_none());
    // verify_context for the runner: every reason, expiry excepted.
    let mut tampered = created.clone();
    tampered.case = "other".into();
    assert_eq!(
        client.verify_context(&tampered).unwrap_err().reason(),
        "bad_signature"
    );
    assert_eq!(
        client.verify_context(&fresh()).unwrap_err().reason(),
        "unsigned"
    );
    // Without keys the runner accepts unsigned records with a valid id.
    let plain = offline_client();
    assert!(trigger
        .maybe_trigger(&plain, &())
        .unwrap()
        .signature
        .is_none());
    assert_eq!(plain.verify_context(&fresh()), Ok(()));
    let mut bad_id = fresh();
    bad_id.id = String::new();
    assert_eq!(
        plain.verify_context(&bad_id).unwrap_err().reason(),
        "bad_test_id"
    );
}

#[tokio::test]
async fn kafka_with_signing_on_bad_contexts_are_non_test_records_counted_by_reason() {
    let broker = EmbeddedBroker::start().unwrap();
    let client = LiveCheck::new(
        KafkaConfig::new(broker.bootstrap_servers()),
        Topics::default(),
    )
    .unwrap()
    .with_signing(keys());
    // An accepted context goes on signed: what the producer side injects verifies.
    let good = client.sign(fresh());
    let injected = client
        .scope(good.clone(), async { kafka::inject(OwnedHeaders::new()) })
        .await;
    let good_list: Vec<(&'static str, String)> = {
        use rdkafka::message::Headers as _;
        injected
            .iter()
            // The LiveCheck headers (the W3C `baggage` carries the same context).
            .filter_map(|h| {
                let key = headers::ALL_WITH_SIGNATURE
                    .into_iter()
                    .find(|n| *n == h.key)?;
                Some((key, String::from_utf8(h.value.unwrap().to_vec()).unwrap()))
            })
            .collect()
    };
    assert_eq!(good_list.len(), 5, "{good_list:?}");

    let cases = bad_contexts();
    let mut lists = vec![good_list, Vec::new()];
    lists.extend(cases.iter().map(|(_, list)| list.clone()));
    let messages = support::through_kafka(
        &broker,
        &KafkaConfig::new(broker.bootstrap_servers()).set("linger.ms", "0"),
        &lists,
    )
    .await;

    let accepted = client.accept_message(&messages[0]).unwrap();
    assert_eq!(accepted.id, good.id);
    assert_eq!(accepted.signature, good.signature);
    let in_scope = client
        .scope_message(&messages[0], async { current_test().map(|c| c.id.clone()) })
        .await;
    assert_eq!(in_scope, Some(good.id.clone()));
    assert!(client.accept_message(&messages[1]).is_none());
    assert_eq!(rejections(client.counters()), []);

    for (message, (reason, list)) in messages[2..].iter().zip(&cases) {
        let before = counter(client.counters(), reason);
        let in_scope = client
            .scope_message(message, async { current_test().is_some() })
            .await;
        assert!(!in_scope, "{reason}: {list:?}");
        assert_eq!(
            counter(client.counters(), reason),
            before + 1,
            "{reason}: {list:?}"
        );
    }
    assert_eq!(
        counter(client.counters(), "contexts_rejected"),
        cases.len() as u64
    );

    // Signing off: the unsigned and the expired records are tests as before.
    let plain = LiveCheck::new(
        KafkaConfig::new(broker.bootstrap_servers()),
        Topics::default(),
    )
    .unwrap();
    for (i, (reason, _)) in cases.iter().enumerate() {
        let accepted = plain.accept_message(&messages[i + 2]).is_some();
        let still_rejected = matches!(
            *reason,
            "contexts_rejected_oversized"
                | "contexts_rejected_bad_test_id"
                | "contexts_rejected_duplicate_header"
                | "contexts_rejected_malformed"
        );
        assert_eq!(accepted, !still_rejected, "{reason}");
    }
    assert_eq!(counter(plain.counters(), "contexts_rejected"), 4);
    assert_eq!(counter(plain.counters(), "contexts_rejected_unsigned"), 0);
}

/// `header_list` as the `livecheck.*` members of one `baggage` value, written by
/// OpenTelemetry's propagator: the context with no LiveCheck header.
fn as_baggage(header_list: &[(&'static str, String)]) -> String {
    use opentelemetry::baggage::{Baggage, BaggageExt as _};
    use opentelemetry::propagation::TextMapPropagator as _;
    let mut baggage = Baggage::new();
    for (name, value) in header_list {
        let i = headers::EVERY.iter().position(|n| n == name).unwrap();
        baggage.insert(livecheck_core::baggage::KEYS[i], value.clone());
    }
    let mut out = std::collections::HashMap::new();
    opentelemetry_sdk::propagation::BaggagePropagator::new().inject_context(
        &opentelemetry::Context::new().with_baggage(baggage),
        &mut out,
    );
    out.remove("baggage").unwrap()
}

#[tokio::test]
async fn contexts_in_baggage_are_checked_as_those_in_the_headers() {
    let client = offline_client().with_signing(keys());
    let url = start_server(client.clone()).await;

    // A signed context in the baggage alone is accepted; the helpers carry the signature on
    // in the baggage, so the next hop verifies it too.
    let good = client.sign(fresh());
    let (_, body) = get_with(&url, &[("baggage", as_baggage(&headers::encode(&good)))]).await;
    assert_eq!(body, good.id);
    let mut map = http::HeaderMap::new();
    livecheck_core::http::inject(&mut map, &good);
    for name in headers::EVERY {
        map.remove(name);
    }
    let next = client.accept(livecheck_core::http::extract(&map), "test");
    assert_eq!(next.map(|c| c.signature), Some(good.signature.clone()));
    assert_eq!(rejections(client.counters()), []);

    // Every bad context lands in the same counter as in the headers. (A member repeated in
    // one baggage is kept once by the propagator: no duplicate to reject there.)
    for (reason, header_list) in bad_contexts()
        .into_iter()
        .filter(|(reason, _)| *reason != "contexts_rejected_duplicate_header")
    {
        let before = counter(client.counters(), reason);
        let (status, body) = get_with(&url, &[("baggage", as_baggage(&header_list))]).await;
        assert_eq!(
            (status, body.as_str()),
            (200, "none"),
            "{reason}: {header_list:?}"
        );
        assert_eq!(
            counter(client.counters(), reason),
            before + 1,
            "{reason}: {header_list:?}"
        );
    }

    // Good LiveCheck headers with a forged context in the baggage: the headers win.
    let mut forged = fresh();
    forged.signature = Some(
        SigningKeys::new("k1", "a-guessed-secret-0000")
            .unwrap()
            .sign(&forged),
    );
    let mut both = headers::encode(&good);
    both.push(("baggage", as_baggage(&headers::encode(&forged))));
    let (_, body) = get_with(&url, &both).await;
    assert_eq!(body, good.id);
}
