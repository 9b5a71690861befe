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
    /// The user placing the order (orders are sampled by user); a fresh one when absent.
    #[arg(long)]
    user: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let url = format!(
        "{}/order/init/{}/",
        args.base_url.trim_end_matches('/'),
        args.side.as_str(),
    );
    let mut query = Vec::new();
    if args.fake {
        query.push(("fake", "1"));
    }
    if let Some(user) = &args.user {
        query.push(("user", user.as_str()));
    }
    let response = reqwest::Client::new()
        .get(&url)
        .query(&query)
        .send()
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
