//! What the core's integration tests share.

use livecheck_core::Runner;
use tokio::sync::oneshot;

/// Runs `runner` in the background until the returned sender is used or dropped, and
/// waits until it has its partitions.
pub(crate) async fn start_runner(runner: &Runner) -> oneshot::Sender<()> {
    let (stop, stopped) = oneshot::channel::<()>();
    let r = runner.clone();
    tokio::spawn(async move {
        r.run(async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    runner.ready().await;
    stop
}
