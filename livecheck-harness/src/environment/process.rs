//! Services run as child processes.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tracing::debug;

use super::config::EnvironmentError;
use super::ready::Ready;

/// A running child process; killed when dropped.
#[derive(Debug)]
pub(crate) struct ChildGuard {
    _child: Child,
}

/// Starts `program` and waits until `ready` holds (a line on its stdout or stderr, its
/// port, or an HTTP path), failing early when it exits.
pub(crate) async fn start_process(
    name: &str,
    program: &Path,
    args: &[String],
    env: &BTreeMap<String, String>,
    ready: &Ready,
    port: u16,
    timeout: Duration,
) -> Result<ChildGuard, EnvironmentError> {
    let failed = |message: String| EnvironmentError::Service {
        name: name.to_owned(),
        message,
    };
    let mut child = Command::new(program)
        .args(args)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed(format!("cannot run {}: {e}", program.display())))?;
    // Both outputs go to the log (target `livecheck_harness::service`); the last lines
    // explain an early exit; a ready line is watched for.
    let (seen_tx, mut seen) = watch::channel(Vec::<String>::new());
    let wanted = match ready {
        Ready::Line(text) => Some(text.clone()),
        _ => None,
    };
    let (ready_tx, mut ready_rx) = watch::channel(false);
    let outputs = [
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        child
            .stderr
            .take()
            .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
    ];
    for output in outputs.into_iter().flatten() {
        let (seen_tx, ready_tx, wanted, name) = (
            seen_tx.clone(),
            ready_tx.clone(),
            wanted.clone(),
            name.to_owned(),
        );
        tokio::spawn(async move {
            let mut lines = BufReader::new(output).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                debug!(target: "livecheck_harness::service", service = %name, "{line}");
                if wanted.as_deref().is_some_and(|w| line.contains(w)) {
                    ready_tx.send_replace(true);
                }
                seen_tx.send_modify(|seen| {
                    seen.push(line);
                    if seen.len() > 20 {
                        seen.remove(0);
                    }
                });
            }
        });
    }
    let wait = async {
        if wanted.is_some() {
            let _ = ready_rx.wait_for(|r| *r).await;
            Ok(())
        } else {
            ready.poll(port, timeout).await
        }
    };
    let last_lines = |seen: &mut watch::Receiver<Vec<String>>| seen.borrow_and_update().join("\n");
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(timeout, wait) => Ok(outcome),
        status = child.wait() => Err(status),
    };
    match outcome {
        Ok(Ok(Ok(()))) => Ok(ChildGuard { _child: child }),
        Ok(Ok(Err(e))) => Err(failed(e)),
        Ok(Err(_)) => Err(failed(format!(
            "not ready within {timeout:?} ({ready:?}); its last lines:\n{}",
            last_lines(&mut seen)
        ))),
        Err(status) => {
            // Let the readers take the last lines.
            tokio::time::sleep(Duration::from_millis(100)).await;
            Err(failed(format!(
                "exited before it was ready ({}); its last lines:\n{}",
                status.map_or_else(|e| e.to_string(), |s| s.to_string()),
                last_lines(&mut seen)
            )))
        }
    }
}
