//! The stimulus: the synthetic request that starts a test in CI and in synthetic traffic.

/// What a stimulus could not do. A stimulus error makes the run `ERROR`.
#[derive(Debug, thiserror::Error)]
pub enum StimulusError {
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
