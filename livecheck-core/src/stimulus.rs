//! The stimulus: the synthetic request that starts a test in CI and in synthetic traffic,
//! and the arguments it chooses for the test.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use serde::Serialize;

use crate::case::BoxFuture;

/// What a stimulus could not do. A stimulus error makes the run `ERROR`.
#[derive(Debug, thiserror::Error)]
pub enum StimulusError {
    /// The arguments the stimulus chose do not serialize as JSON.
    #[error("the arguments of case {case} do not serialize: {source}")]
    Arguments {
        /// The case.
        case: String,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// The case's route rule ([`crate::Case::route_by`]) failed on the arguments the
    /// stimulus chose.
    #[error("the route of case {case} does not follow from its arguments: {error}")]
    Route {
        /// The case.
        case: String,
        /// What failed.
        error: String,
    },
    /// The request did not get an answer.
    #[error("request to {url} failed: {source}")]
    Request {
        /// The URL.
        url: String,
        /// The client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The service answered with an error status.
    #[error("{url} answered HTTP {status}: {body}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: http::StatusCode,
        /// The start of the body.
        body: String,
    },
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// The service a stimulus talks to: a base URL and an HTTP client that carries the current
/// test context in its requests.
#[derive(Debug, Clone)]
pub struct Target {
    base_url: String,
    http: reqwest::Client,
}

impl Target {
    /// A target at `base_url` (`http://127.0.0.1:6066`).
    pub fn new(base_url: impl Into<String>) -> Self {
        Self::with_client(base_url, reqwest::Client::new())
    }

    /// A target with a client of your own.
    pub fn with_client(base_url: impl Into<String>, http: reqwest::Client) -> Self {
        Self {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            http,
        }
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `base_url` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// The HTTP client (use [`crate::http::RequestBuilderExt::test_context`] on requests).
    pub fn client(&self) -> &reqwest::Client {
        &self.http
    }

    /// GETs `path` with the current test context; an error status is an error.
    pub async fn get(&self, path: &str) -> Result<String, StimulusError> {
        use crate::http::RequestBuilderExt as _;
        let url = self.url(path);
        let response = self
            .http
            .get(&url)
            .test_context()
            .send()
            .await
            .map_err(|source| StimulusError::Request {
                url: url.clone(),
                source,
            })?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if !status.is_success() {
            let body: String = body.chars().take(200).collect();
            return Err(StimulusError::Status { url, status, body });
        }
        Ok(body)
    }
}

/// A case's stimulus as stored: each call chooses fresh arguments and returns the request
/// still to send with them.
pub(crate) type StimulusFn =
    Arc<dyn Fn(&str) -> Result<PreparedStimulus, StimulusError> + Send + Sync>;

/// The stored form of a stimulus that chooses its arguments with `arguments` and sends its
/// request with `stimulus`.
pub(crate) fn stimulus_fn<A, G, F, Fut>(arguments: G, stimulus: F) -> StimulusFn
where
    A: Serialize + Send + 'static,
    G: Fn() -> A + Send + Sync + 'static,
    F: Fn(Target, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), StimulusError>> + Send + 'static,
{
    let stimulus = Arc::new(stimulus);
    Arc::new(move |case: &str| {
        let chosen = arguments();
        let json = serde_json::to_value(&chosen).map_err(|source| StimulusError::Arguments {
            case: case.to_owned(),
            source,
        })?;
        let stimulus = stimulus.clone();
        Ok(PreparedStimulus {
            arguments: json,
            route: None,
            send: Box::new(move |target| Box::pin(stimulus(target, chosen))),
        })
    })
}

/// One run's stimulus, ready to send: the arguments it chose (as JSON) and its request.
///
/// A harness builds the test context with [`PreparedStimulus::arguments`] and
/// [`PreparedStimulus::route`] (and signs it after), then sends the request scoped by that
/// context:
///
/// ```no_run
/// # use std::time::Duration;
/// # use livecheck_core::{Case, LiveCheck, Target, TestContext};
/// # async fn demo(case: Case, client: LiveCheck, target: Target) -> Result<(), Box<dyn std::error::Error>> {
/// let stimulus = case.prepare_stimulus()?;
/// let mut context = TestContext::new(case.name(), case.settings().test_expires)
///     .arguments(stimulus.arguments().clone());
/// context.route = stimulus.route().map(str::to_owned);
/// let context = client.sign(context);
/// client.scope(context, stimulus.send(target)).await?;
/// # Ok(()) }
/// ```
pub struct PreparedStimulus {
    arguments: serde_json::Value,
    pub(crate) route: Option<String>,
    send: Box<dyn FnOnce(Target) -> BoxFuture<Result<(), StimulusError>> + Send>,
}

impl fmt::Debug for PreparedStimulus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedStimulus")
            .field("arguments", &self.arguments)
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

impl PreparedStimulus {
    /// The arguments the stimulus chose, as JSON (`null` for [`crate::Case::stimulus`]).
    pub fn arguments(&self) -> &serde_json::Value {
        &self.arguments
    }

    /// The route of the test, by the case's rule on [`PreparedStimulus::arguments`]
    /// ([`crate::Case::route_by`]); `None` when the case has no rule.
    pub fn route(&self) -> Option<&str> {
        self.route.as_deref()
    }

    /// Sends the request to `target` (scope it with the test context first).
    pub async fn send(self, target: Target) -> Result<(), StimulusError> {
        (self.send)(target).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::case::Case;

    #[test]
    fn each_run_chooses_fresh_arguments_and_a_plain_stimulus_none() {
        let next = AtomicU32::new(0);
        let case = Case::new("orders.place_order").stimulus_with(
            move || next.fetch_add(1, Ordering::Relaxed),
            |_: Target, _: u32| async { Ok(()) },
        );
        let chosen: Vec<_> = (0..3)
            .map(|_| case.prepare_stimulus().unwrap().arguments().clone())
            .collect();
        assert_eq!(chosen, [0, 1, 2]);
        let plain = Case::new("orders.place_order").stimulus(|_: Target| async { Ok(()) });
        assert!(plain.prepare_stimulus().unwrap().arguments().is_null());
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Transfer {
        from: String,
        amount: u64,
    }

    fn transfer(from: &str) -> Transfer {
        Transfer {
            from: from.to_owned(),
            amount: 5,
        }
    }

    #[test]
    fn the_case_rule_routes_each_stimulus_by_its_arguments() {
        let next = AtomicU32::new(0);
        let case = Case::new("ledger.transfer")
            .route_by(|t: &Transfer| t.from.clone())
            .stimulus_with(
                move || transfer(&format!("account-{}", next.fetch_add(1, Ordering::Relaxed))),
                |_: Target, _: Transfer| async { Ok(()) },
            );
        assert!(case.routes_by_key());
        let routes: Vec<_> = (0..3)
            .map(|_| case.prepare_stimulus().unwrap().route().map(str::to_owned))
            .collect();
        assert_eq!(
            routes,
            [Some("account-0"), Some("account-1"), Some("account-2")].map(|r| r.map(String::from))
        );
        assert_eq!(
            case.route_for(&serde_json::json!({"from": "account-9", "amount": 1})),
            Ok(Some("account-9".to_owned()))
        );
        let err = case.route_for(&serde_json::json!("sell")).unwrap_err();
        assert!(err.contains("do not decode as"), "{err}");

        // Without a rule: no route, whatever the arguments.
        let plain = Case::new("ledger.transfer").stimulus_with(
            || transfer("account-1"),
            |_: Target, _: Transfer| async { Ok(()) },
        );
        assert!(!plain.routes_by_key());
        assert_eq!(plain.prepare_stimulus().unwrap().route(), None);
        assert_eq!(plain.route_for(&serde_json::json!("sell")), Ok(None));
    }

    #[test]
    fn a_rule_that_fails_on_the_arguments_is_an_error_naming_the_case() {
        // The arguments do not decode as the rule's type.
        let case = Case::new("ledger.transfer")
            .route_by(|t: &Transfer| t.from.clone())
            .stimulus_with(|| "sell", |_: Target, _| async { Ok(()) });
        let err = case.prepare_stimulus().unwrap_err();
        assert!(matches!(err, StimulusError::Route { ref case, .. } if case == "ledger.transfer"));
        let message = err.to_string();
        assert!(
            message.starts_with(
                "the route of case ledger.transfer does not follow from its arguments: test arguments \"sell\" do not decode as"
            ),
            "{message}"
        );
        // The rule gives something that cannot be a route.
        let case = Case::new("ledger.transfer")
            .route_by(|t: &Transfer| t.from.clone())
            .stimulus_with(|| transfer("two words"), |_: Target, _| async { Ok(()) });
        assert_eq!(
            case.prepare_stimulus().unwrap_err().to_string(),
            "the route of case ledger.transfer does not follow from its arguments: test route \"two words\" is not 1 to 256 bytes of visible ASCII (it has a space, a control or a non-ASCII character)"
        );
    }

    #[test]
    fn arguments_that_do_not_serialize_are_an_error_naming_the_case() {
        let case = Case::new("orders.place_order").stimulus_with(
            || HashMap::from([((1, 2), 3)]),
            |_: Target, _| async { Ok(()) },
        );
        let err = case.prepare_stimulus().unwrap_err();
        assert_eq!(
            err.to_string(),
            "the arguments of case orders.place_order do not serialize: key must be a string"
        );
        let none = Case::new("orders.place_order")
            .prepare_stimulus()
            .unwrap_err();
        assert_eq!(
            none.to_string(),
            "case orders.place_order has no stimulus; give it one with Case::stimulus"
        );
    }
}
