//! Readiness: when a started broker, app or sidecar counts as up.

use std::time::{Duration, Instant};

/// When a started service is ready. Checked from the host: containers use the host
/// network, so a service's port is `127.0.0.1:{port}` for the harness too.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ready {
    /// Ready at once (nothing to wait for).
    Now,
    /// When this text appears in a line of its standard output or error.
    Line(String),
    /// When `GET http://127.0.0.1:{port}{path}` answers 2xx.
    Http(String),
    /// When its port accepts TCP connections.
    Tcp,
}

impl Ready {
    /// [`Ready::Line`].
    pub fn line(text: impl Into<String>) -> Self {
        Self::Line(text.into())
    }

    /// [`Ready::Http`] on `path` (`/healthz`).
    pub fn http(path: impl Into<String>) -> Self {
        Self::Http(path.into())
    }

    /// Polls the HTTP or TCP condition on `port` until it holds or `timeout` passes (the
    /// other conditions hold at once here: a line is waited for where the output is read).
    pub(crate) async fn poll(&self, port: u16, timeout: Duration) -> Result<(), String> {
        let started = Instant::now();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| e.to_string())?;
        loop {
            let outcome = match self {
                Self::Now | Self::Line(_) => return Ok(()),
                Self::Tcp => tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Self::Http(path) => match http
                    .get(format!("http://127.0.0.1:{port}{path}"))
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("{path} answered {}", r.status())),
                    Err(e) => Err(e.to_string()),
                },
            };
            let last = match outcome {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if started.elapsed() >= timeout {
                return Err(format!("not ready within {timeout:?}: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
