//! Places one order, as the tutorial's `post_order --side=sell`.

use clap::Parser;

/// Places an order through the example app's HTTP front.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// `buy` or `sell`.
    #[arg(long)]
    side: example_app::Side,
    /// Base URL of the app.
    #[arg(long, default_value = "http://127.0.0.1:6066")]
    base_url: String,
    /// Mark the order synthetic (not executed).
    #[arg(long)]
    fake: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let url = format!(
        "{}/order/init/{}/{}",
        args.base_url.trim_end_matches('/'),
        args.side.as_str(),
        if args.fake { "?fake=1" } else { "" }
    );
    let response = reqwest::get(&url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {url}: {e} (is example-app running?)"))?;
    let status = response.status();
    let body = response.text().await?;
    println!("{status} {body}");
    if !status.is_success() {
        anyhow::bail!("{url} answered {status}");
    }
    Ok(())
}
