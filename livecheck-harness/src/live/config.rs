//! Live-mode settings: a profile of `livecheck.toml`, overridden by environment variables
//! and flags (clap does both: every flag has an environment variable).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use livecheck_core::control::SamplingName;
use livecheck_core::signing::{SecretString, SigningKeys};
use livecheck_core::{KafkaConfig, MAX_LANES};
use serde::Deserialize;

use super::alerts::{AlertFormat, Webhook, PAGERDUTY_EVENTS_URL};
use super::rollout::{RolloutPlan, DEFAULT_MAX_FAILURE_RATE, DEFAULT_MIN_RUNS};
use super::state::DEFAULT_HISTORY_WINDOW;

/// Command-line flags of the `livecheck` binary. Flags whose values can carry secrets
/// (Kafka properties, URLs) never show their environment values in `--help`, and `Debug`
/// redacts them.
#[derive(Clone, Default, clap::Parser)]
#[command(
    name = "livecheck",
    version,
    about = "Runs the check files on live traffic: a passive observer of production and staging streams."
)]
pub struct LiveArgs {
    /// Profile of the settings file (`staging`, `production`, ...). Without a profile and
    /// without brokers, the binary starts its local system if it has one (else: an error).
    #[arg(long, env = "LIVECHECK_PROFILE")]
    pub profile: Option<String>,
    /// Settings file.
    #[arg(long, env = "LIVECHECK_CONFIG", default_value = "livecheck.toml")]
    pub config: PathBuf,
    /// Kafka bootstrap servers.
    #[arg(long, env = "LIVECHECK_BROKERS")]
    pub brokers: Option<String>,
    /// Prefix of the topic names (`staging-` gives `staging-livecheck-tests`, ...).
    #[arg(long, env = "LIVECHECK_TOPIC_PREFIX")]
    pub topic_prefix: Option<String>,
    /// Consumer group of the runners.
    #[arg(long, env = "LIVECHECK_GROUP_ID")]
    pub group_id: Option<String>,
    /// Port of the status page, `/metrics` and the JSON API (0 picks one).
    #[arg(long, env = "LIVECHECK_HTTP_PORT")]
    pub http_port: Option<u16>,
    /// Address the HTTP surfaces bind.
    #[arg(long, env = "LIVECHECK_HTTP_HOST")]
    pub http_host: Option<String>,
    /// URL that receives suite-state alerts (JSON POST, format `json`); more webhooks, in
    /// other formats, go in the profile (`[[profiles.p.webhooks]]`).
    #[arg(long, env = "LIVECHECK_ALERT_WEBHOOK", hide_env_values = true)]
    pub alert_webhook: Option<String>,
    /// Base URL of the status page as the people who get alerts reach it (alerts link to
    /// runs under it); default: the address the HTTP surfaces bind.
    #[arg(long, env = "LIVECHECK_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Base URL of the service the synthetic requests go to.
    #[arg(long, env = "LIVECHECK_APP_URL", hide_env_values = true)]
    pub app_url: Option<String>,
    /// Kafka client property `key=value` (security settings included); repeatable.
    #[arg(
        long = "kafka",
        value_name = "KEY=VALUE",
        env = "LIVECHECK_KAFKA",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub kafka: Vec<String>,
    /// Case probability `case=0.01`; repeatable.
    #[arg(
        long = "case-probability",
        value_name = "CASE=P",
        env = "LIVECHECK_CASE_PROBABILITY",
        value_delimiter = ','
    )]
    pub case_probability: Vec<String>,
    /// Case active flag `case=false`; repeatable.
    #[arg(
        long = "case-active",
        value_name = "CASE=BOOL",
        env = "LIVECHECK_CASE_ACTIVE",
        value_delimiter = ','
    )]
    pub case_active: Vec<String>,
    /// Stop cleanly after this long (`30s`, `5m`, `1h`); for scripts.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub run_for: Option<Duration>,
    /// How long a case must stay healthy before OK is announced (`30s`, `2m`).
    #[arg(long = "hold-down", value_name = "DURATION", env = "LIVECHECK_HOLD_DOWN", value_parser = parse_duration)]
    pub hold_down: Option<Duration>,
    /// How long the status page keeps each kind's last failures (`1h`, `6h`; default 1h).
    #[arg(long = "history-window", value_name = "DURATION", env = "LIVECHECK_HISTORY_WINDOW", value_parser = parse_duration)]
    pub history_window: Option<Duration>,
    /// `fetch.wait.max.ms` of the runner's consumers (`2ms`, `500ms`; default 2ms): the
    /// longest a broker may hold a fetch that found nothing. Brokers that hold it even when
    /// records arrive (tansu, the embedded broker) add up to this to every verdict; Apache
    /// Kafka answers at once, so a long wait (500ms) costs no latency there and less CPU.
    #[arg(long = "fetch-wait", value_name = "DURATION", env = "LIVECHECK_FETCH_WAIT", value_parser = parse_duration)]
    pub fetch_wait: Option<Duration>,
    /// How many lanes the runner reads and checks with, each a member of the group with its
    /// share of the partitions and a loop of its own (default: the cores this process may
    /// use, at most 8). One lane keeps about one core busy; more lanes than partitions stay
    /// idle. Each lane has two consumers and a producer of its own, and the runner's limits
    /// hold per lane.
    #[arg(long, value_name = "N", env = "LIVECHECK_LANES")]
    pub lanes: Option<usize>,
    /// Seconds between summaries logged (one line per case: runs in the interval and since
    /// start).
    #[arg(long, env = "LIVECHECK_SUMMARY_EVERY", default_value_t = 10)]
    pub summary_every: u64,
    /// Log every verdict too (one line per finished run, target `livecheck::verdict`).
    #[arg(long, env = "LIVECHECK_PRINT_VERDICTS")]
    pub print_verdicts: bool,
    /// Log format on stderr: `text` (colours only on a terminal, and never with `NO_COLOR`)
    /// or `json` (one JSON object per line). `RUST_LOG` sets the levels.
    #[arg(long, env = "LIVECHECK_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: LogFormat,
    /// Signing keys `kid:secret[,kid:secret...]`: the first signs synthetic tests, all verify.
    #[arg(
        long,
        env = "LIVECHECK_SIGNING_KEYS",
        hide_env_values = true,
        value_name = "KID:SECRET,..."
    )]
    pub signing_keys: Option<SecretString>,
    /// Token that `PUT /api/cases/{case}` requires (`Authorization: Bearer <token>`, at
    /// least 16 characters); without one the API is read-only.
    #[arg(
        long,
        env = "LIVECHECK_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub admin_token: Option<SecretString>,
}

impl std::fmt::Debug for LiveArgs {
    /// Secret-bearing values redacted (Kafka properties by key, URLs to scheme and host).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = |u: &Option<String>| u.as_deref().map(livecheck_core::redact::url);
        let kafka: Vec<String> = self
            .kafka
            .iter()
            .map(|s| livecheck_core::redact::setting(s))
            .collect();
        f.debug_struct("LiveArgs")
            .field("profile", &self.profile)
            .field("config", &self.config)
            .field("brokers", &self.brokers)
            .field("topic_prefix", &self.topic_prefix)
            .field("group_id", &self.group_id)
            .field("http_port", &self.http_port)
            .field("http_host", &self.http_host)
            .field("alert_webhook", &url(&self.alert_webhook))
            .field("public_url", &self.public_url)
            .field("app_url", &url(&self.app_url))
            .field("kafka", &kafka)
            .field("case_probability", &self.case_probability)
            .field("case_active", &self.case_active)
            .field("run_for", &self.run_for)
            .field("hold_down", &self.hold_down)
            .field("history_window", &self.history_window)
            .field("fetch_wait", &self.fetch_wait)
            .field("lanes", &self.lanes)
            .field("summary_every", &self.summary_every)
            .field("print_verdicts", &self.print_verdicts)
            .field("log_format", &self.log_format)
            .field("admin_token", &self.admin_token)
            .finish_non_exhaustive()
    }
}

/// Log format of the `livecheck` binary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (fields flattened: `timestamp`, `level`, `target`,
    /// `message` and the event's fields).
    Json,
}

/// Parses `500ms`, `30s`, `5m`, `2h` or a number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 30s, 5m, 1h)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?} (use ms, s, m or h)"
            ))
        }
    };
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("{s:?} is not a duration we can wait for"))
}

/// Bounds of the runner's fetch wait (librdkafka counts it in whole milliseconds). A second
/// at most: a quiet partition's event-time clock lags by up to the wait (so do TIMEOUTs),
/// and a bare number is read as seconds (`"2"` is 2 s, refused rather than taken).
const MIN_FETCH_WAIT: Duration = Duration::from_millis(1);
const MAX_FETCH_WAIT: Duration = Duration::from_secs(1);

/// The runner's lanes unless configured: one per core this process may use, up to 8.
fn default_lanes() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// How long a case must stay healthy before OK is announced, unless configured.
pub const DEFAULT_HOLD_DOWN: Duration = Duration::from_secs(30);

/// One profile of `livecheck.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Bootstrap servers.
    pub brokers: Option<String>,
    /// Topic prefix.
    pub topic_prefix: Option<String>,
    /// Consumer group.
    pub group_id: Option<String>,
    /// HTTP port.
    pub http_port: Option<u16>,
    /// HTTP bind address.
    pub http_host: Option<String>,
    /// Alert webhook (format `json`).
    pub alert_webhook: Option<String>,
    /// Named alert webhooks, each with its format.
    #[serde(default)]
    pub webhooks: Vec<WebhookSettings>,
    /// Base URL of the status page for the links in alerts.
    pub public_url: Option<String>,
    /// Service base URL for synthetic requests.
    pub app_url: Option<String>,
    /// Seconds a case must stay healthy before OK is announced (default 30).
    pub hold_down_secs: Option<u64>,
    /// How long the status page keeps each kind's last failures (`"1h"`, default 1h).
    pub history_window: Option<String>,
    /// `fetch.wait.max.ms` of the runner's consumers (`"2ms"`, `"500ms"`; default 2ms).
    pub fetch_wait: Option<String>,
    /// The runner's lanes (default: the cores this process may use, at most 8).
    pub lanes: Option<usize>,
    /// Kafka client properties.
    #[serde(default)]
    pub kafka: BTreeMap<String, String>,
    /// Per-case settings.
    #[serde(default)]
    pub cases: BTreeMap<String, CaseSettings>,
    /// Signing keys `kid:secret[,kid:secret...]`.
    pub signing_keys: Option<SecretString>,
    /// Token of the settings API (`PUT /api/cases/{case}`).
    pub admin_token: Option<SecretString>,
}

/// `[[profiles.p.webhooks]]`: a receiver of alerts (see [`super::alerts`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Its name in logs and metrics.
    pub name: String,
    /// Where alerts are POSTed (default for `pagerduty`: the Events API v2 URL).
    pub url: Option<SecretUrl>,
    /// `json` (default), `alertmanager`, `slack` or `pagerduty`.
    #[serde(default)]
    pub format: AlertFormat,
    /// PagerDuty's integration (routing) key; `pagerduty` only.
    pub routing_key: Option<SecretString>,
}

/// A URL whose path may be a secret (a Slack webhook's token): `Debug` shows its scheme
/// and host only.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(pub String);

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&livecheck_core::redact::url(&self.0))
    }
}

/// Per-case settings of a profile.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseSettings {
    /// Probability.
    pub probability: Option<f64>,
    /// Active flag.
    pub active: Option<bool>,
    /// How triggers sample: `random`, `test_id` or `key`.
    pub sampling: Option<SamplingName>,
    /// How long after issue a test is still worth running (`30s`, `1h`).
    pub test_expires: Option<String>,
    /// A gradual roll-out of the case's probability.
    pub rollout: Option<RolloutSettings>,
}

/// `[profiles.p.cases."c".rollout]`: the probability goes through `steps`, one every
/// `every`, while the case's failure rate stays at most `max_failure_rate` (see
/// [`super::rollout`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSettings {
    /// Probabilities, increasing, e.g. `[0.001, 0.01, 0.1, 1.0]`.
    pub steps: Vec<f64>,
    /// How long each step lasts at least (`10m`).
    pub every: String,
    /// Highest failure rate a step may have and advance (default 0.05).
    pub max_failure_rate: Option<f64>,
    /// Runs a step needs before it is judged (default 20).
    pub min_runs: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
}

/// A settings problem, naming the key and where it came from.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The resolved settings (`Debug` redacts secrets).
#[derive(Clone)]
pub struct LiveConfig {
    /// Profile name (`local` when none).
    pub profile: String,
    /// Kafka (`None`: the binary's local system, see `Livecheck::local_system`).
    pub kafka: Option<KafkaConfig>,
    /// Topic prefix.
    pub topic_prefix: String,
    /// Consumer group.
    pub group_id: String,
    /// HTTP bind address and port.
    pub http_host: String,
    /// HTTP port.
    pub http_port: u16,
    /// Alert webhook (format `json`, named `alert_webhook`).
    pub alert_webhook: Option<String>,
    /// The profile's named webhooks.
    pub webhooks: Vec<Webhook>,
    /// Base URL of the status page for the links in alerts (`None`: the bound address).
    pub public_url: Option<String>,
    /// Service base URL.
    pub app_url: Option<String>,
    /// How long a case must stay healthy before OK is announced.
    pub hold_down: Duration,
    /// How long the status page keeps each kind's last failures.
    pub history_window: Duration,
    /// `fetch.wait.max.ms` of the runner's consumers ([`RunnerConfig::fetch_wait`]).
    ///
    /// [`RunnerConfig::fetch_wait`]: livecheck_core::RunnerConfig::fetch_wait
    pub fetch_wait: Duration,
    /// The runner's lanes ([`RunnerConfig::lanes`]).
    ///
    /// [`RunnerConfig::lanes`]: livecheck_core::RunnerConfig::lanes
    pub lanes: usize,
    /// Per-case probability overrides.
    pub probabilities: BTreeMap<String, f64>,
    /// Per-case active overrides.
    pub active: BTreeMap<String, bool>,
    /// Stop after.
    pub run_for: Option<Duration>,
    /// Summary period.
    pub summary_every: Duration,
    /// Print every verdict.
    pub print_verdicts: bool,
    /// Log lines as JSON (`--log-format json`): verdicts and summaries carry their numbers
    /// as fields; as text they are one readable sentence.
    pub json_logs: bool,
    /// Signing keys (`None`: contexts are neither signed nor checked).
    pub signing_keys: Option<SigningKeys>,
    /// Per-case sampling overrides.
    pub sampling: BTreeMap<String, SamplingName>,
    /// Per-case test expiry overrides.
    pub test_expires: BTreeMap<String, Duration>,
    /// Per-case roll-out plans.
    pub rollouts: BTreeMap<String, RolloutPlan>,
    /// Token of the settings API (`None`: read-only).
    pub admin_token: Option<SecretString>,
    /// Where the case settings come from again on reload (SIGHUP or a change of the file):
    /// the flags, with the profile file. `None` without a profile: nothing to reload.
    pub reload: Option<LiveArgs>,
    /// How often the profile file's modification time is checked (zero: never; SIGHUP
    /// still reloads).
    pub watch_every: Duration,
}

/// How often the profile file is checked for changes, unless configured.
pub const DEFAULT_WATCH_EVERY: Duration = Duration::from_secs(3);
/// The shortest admin token accepted.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

impl std::fmt::Debug for LiveConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = |u: &Option<String>| u.as_deref().map(livecheck_core::redact::url);
        f.debug_struct("LiveConfig")
            .field("profile", &self.profile)
            .field("kafka", &self.kafka)
            .field("topic_prefix", &self.topic_prefix)
            .field("group_id", &self.group_id)
            .field("http_host", &self.http_host)
            .field("http_port", &self.http_port)
            .field("alert_webhook", &url(&self.alert_webhook))
            .field("webhooks", &self.webhooks)
            .field("public_url", &self.public_url)
            .field("app_url", &url(&self.app_url))
            .field("hold_down", &self.hold_down)
            .field("history_window", &self.history_window)
            .field("fetch_wait", &self.fetch_wait)
            .field("lanes", &self.lanes)
            .field("probabilities", &self.probabilities)
            .field("active", &self.active)
            .field("run_for", &self.run_for)
            .field("summary_every", &self.summary_every)
            .field("print_verdicts", &self.print_verdicts)
            .field("json_logs", &self.json_logs)
            .field("sampling", &self.sampling)
            .field("test_expires", &self.test_expires)
            .field("rollouts", &self.rollouts)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("reload", &self.reload.as_ref().map(|a| &a.config))
            .field("watch_every", &self.watch_every)
            .finish_non_exhaustive()
    }
}

fn pairs(values: &[String], what: &str) -> Result<Vec<(String, String)>, ConfigError> {
    values
        .iter()
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            v.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| ConfigError(format!("{what} {v:?} is not KEY=VALUE")))
        })
        .collect()
}

impl LiveConfig {
    /// Resolves flags (and their environment variables) over the profile of the file.
    pub fn resolve(args: &LiveArgs) -> Result<Self, ConfigError> {
        let profile = match &args.profile {
            Some(name) => load_profile(&args.config, name)?,
            None => Profile::default(),
        };
        let name = args.profile.clone().unwrap_or_else(|| "local".to_owned());
        let origin = |key: &str| match &args.profile {
            Some(p) => format!("`{key}` of [profiles.{p}] in {}", args.config.display()),
            None => format!("--{}", key.replace('_', "-")),
        };
        let brokers = args.brokers.clone().or(profile.brokers.clone());
        let mut properties = profile.kafka.clone();
        properties.extend(pairs(&args.kafka, "--kafka")?);
        if properties.contains_key("fetch.wait.max.ms") {
            return Err(ConfigError(
                "fetch.wait.max.ms among the Kafka properties: set it with fetch_wait (--fetch-wait, LIVECHECK_FETCH_WAIT), which the runner's consumers use".to_owned(),
            ));
        }
        let kafka = match brokers {
            Some(b) if b.trim().is_empty() => {
                return Err(ConfigError(format!("{} is empty: give bootstrap servers host:port", origin("brokers"))))
            }
            Some(b) => Some(KafkaConfig {
                brokers: b,
                properties,
            }),
            None if args.profile.is_some() => {
                return Err(ConfigError(format!(
                    "no brokers for profile {name}: set `brokers` in [profiles.{name}] of {}, LIVECHECK_BROKERS or --brokers",
                    args.config.display()
                )))
            }
            None => None,
        };
        let mut probabilities = BTreeMap::new();
        let mut active = BTreeMap::new();
        let mut sampling = BTreeMap::new();
        let mut test_expires = BTreeMap::new();
        let mut rollouts = BTreeMap::new();
        for (case, s) in &profile.cases {
            let key = |k: &str| match &args.profile {
                Some(p) => format!(
                    "`{k}` of [profiles.{p}.cases.\"{case}\"] in {}",
                    args.config.display()
                ),
                None => format!("`{k}` of case {case}"),
            };
            if let Some(p) = s.probability {
                probabilities.insert(case.clone(), p);
            }
            if let Some(a) = s.active {
                active.insert(case.clone(), a);
            }
            if let Some(m) = s.sampling {
                sampling.insert(case.clone(), m);
            }
            if let Some(d) = &s.test_expires {
                let d = parse_duration(d)
                    .map_err(|e| ConfigError(format!("{}: {e}", key("test_expires"))))?;
                if d.is_zero() {
                    return Err(ConfigError(format!(
                        "{} is zero: every test would expire at once",
                        key("test_expires")
                    )));
                }
                test_expires.insert(case.clone(), d);
            }
            if let Some(r) = &s.rollout {
                let every = parse_duration(&r.every)
                    .map_err(|e| ConfigError(format!("{}: {e}", key("rollout.every"))))?;
                let plan = RolloutPlan::new(
                    r.steps.clone(),
                    every,
                    r.max_failure_rate.unwrap_or(DEFAULT_MAX_FAILURE_RATE),
                    r.min_runs.unwrap_or(DEFAULT_MIN_RUNS),
                );
                if let Some(why) = plan.validate() {
                    return Err(ConfigError(format!("{}: {why}", key("rollout"))));
                }
                if s.probability.is_some() {
                    return Err(ConfigError(format!(
                        "{} and {} are both set: the roll-out decides the probability (remove one)",
                        key("probability"),
                        key("rollout")
                    )));
                }
                rollouts.insert(case.clone(), plan);
            }
        }
        for (case, p) in pairs(&args.case_probability, "--case-probability")? {
            let p: f64 = p.parse().map_err(|_| {
                ConfigError(format!("--case-probability {case}={p:?}: not a number"))
            })?;
            if rollouts.contains_key(&case) {
                return Err(ConfigError(format!(
                    "--case-probability {case}={p}: case {case} has a roll-out plan in {}, which decides its probability (remove one)",
                    args.config.display()
                )));
            }
            probabilities.insert(case, p);
        }
        for (case, a) in pairs(&args.case_active, "--case-active")? {
            let a: bool = a.parse().map_err(|_| {
                ConfigError(format!("--case-active {case}={a:?}: use true or false"))
            })?;
            active.insert(case, a);
        }
        for (case, p) in &probabilities {
            if !(0.0..=1.0).contains(p) {
                return Err(ConfigError(format!(
                    "probability of case {case} is {p}, not between 0 and 1 ({})",
                    origin("cases")
                )));
            }
        }
        if let Some(url) = args
            .alert_webhook
            .as_ref()
            .or(profile.alert_webhook.as_ref())
        {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError(format!(
                    "{} = {url:?} is not an http(s) URL",
                    origin("alert_webhook")
                )));
            }
        }
        let webhooks = webhooks(&profile.webhooks, &origin)?;
        let public_url = args
            .public_url
            .clone()
            .or(profile.public_url.clone())
            .map(|u| u.trim_end_matches('/').to_owned());
        if let Some(url) = &public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError(format!(
                    "{} = {url:?} is not an http(s) URL",
                    origin("public_url")
                )));
            }
        }
        let signing_keys = match args.signing_keys.as_ref().or(profile.signing_keys.as_ref()) {
            Some(spec) if !spec.expose().trim().is_empty() => {
                Some(SigningKeys::parse(spec.expose()).map_err(|e| {
                    let from = match args.signing_keys {
                        Some(_) => "--signing-keys (LIVECHECK_SIGNING_KEYS)".to_owned(),
                        None => origin("signing_keys"),
                    };
                    ConfigError(format!("{from}: {e}"))
                })?)
            }
            _ => None,
        };
        let admin_token = match args.admin_token.as_ref().or(profile.admin_token.as_ref()) {
            Some(token) if !token.expose().trim().is_empty() => {
                let from = match args.admin_token {
                    Some(_) => "--admin-token (LIVECHECK_ADMIN_TOKEN)".to_owned(),
                    None => origin("admin_token"),
                };
                let t = token.expose();
                if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(ConfigError(format!(
                        "{from}: the token contains white space or control characters (it travels in an HTTP header)"
                    )));
                }
                if t.chars().count() < MIN_ADMIN_TOKEN_LEN {
                    return Err(ConfigError(format!(
                        "{from}: the token is {} characters, use at least {MIN_ADMIN_TOKEN_LEN} (e.g. `openssl rand -hex 32`)",
                        t.chars().count()
                    )));
                }
                Some(token.clone())
            }
            _ => None,
        };
        // A duration setting: its flag (or variable), else the profile's text, else the
        // default; with where it came from, for the errors.
        let duration = |flag: Option<Duration>,
                        env: &str,
                        text: &Option<String>,
                        key: &str,
                        default: Duration|
         -> Result<(Duration, String), ConfigError> {
            Ok(match (flag, text) {
                (Some(d), _) => (d, format!("--{} ({env})", key.replace('_', "-"))),
                (None, Some(t)) => (
                    parse_duration(t).map_err(|e| ConfigError(format!("{}: {e}", origin(key))))?,
                    origin(key),
                ),
                (None, None) => (default, String::new()),
            })
        };
        let history_window = duration(
            args.history_window,
            "LIVECHECK_HISTORY_WINDOW",
            &profile.history_window,
            "history_window",
            DEFAULT_HISTORY_WINDOW,
        )?;
        if history_window.0 < Duration::from_secs(1) {
            return Err(ConfigError(format!(
                "{} is under a second: the page would keep no failure (try 1h)",
                history_window.1
            )));
        }
        let fetch_wait = duration(
            args.fetch_wait,
            "LIVECHECK_FETCH_WAIT",
            &profile.fetch_wait,
            "fetch_wait",
            livecheck_core::DEFAULT_FETCH_WAIT,
        )?;
        if !(MIN_FETCH_WAIT..=MAX_FETCH_WAIT).contains(&fetch_wait.0)
            || fetch_wait.0.subsec_nanos() % 1_000_000 != 0
        {
            return Err(ConfigError(format!(
                "{} is {:?}: use whole milliseconds from 1ms to 1000ms, with the unit (2ms where the broker holds fetches, as tansu does; 500ms on Apache Kafka)",
                fetch_wait.1, fetch_wait.0
            )));
        }
        let lanes = match (args.lanes, profile.lanes) {
            (Some(n), _) => (n, "--lanes (LIVECHECK_LANES)".to_owned()),
            (None, Some(n)) => (n, origin("lanes")),
            (None, None) => (default_lanes(), String::new()),
        };
        if !(1..=MAX_LANES).contains(&lanes.0) {
            return Err(ConfigError(format!(
                "{} is {}: use 1 to {MAX_LANES} lanes (one per core the runner may use is the default)",
                lanes.1, lanes.0
            )));
        }
        Ok(Self {
            history_window: history_window.0,
            fetch_wait: fetch_wait.0,
            lanes: lanes.0,
            sampling,
            test_expires,
            rollouts,
            admin_token,
            reload: args.profile.is_some().then(|| args.clone()),
            watch_every: DEFAULT_WATCH_EVERY,
            signing_keys,
            topic_prefix: args
                .topic_prefix
                .clone()
                .or(profile.topic_prefix)
                .unwrap_or_default(),
            group_id: args
                .group_id
                .clone()
                .or(profile.group_id)
                .unwrap_or_else(|| format!("livecheck-{name}")),
            http_host: args
                .http_host
                .clone()
                .or(profile.http_host)
                .unwrap_or_else(|| "127.0.0.1".to_owned()),
            http_port: args.http_port.or(profile.http_port).unwrap_or(8099),
            alert_webhook: args.alert_webhook.clone().or(profile.alert_webhook),
            webhooks,
            public_url,
            app_url: args.app_url.clone().or(profile.app_url),
            hold_down: args
                .hold_down
                .or(profile.hold_down_secs.map(Duration::from_secs))
                .unwrap_or(DEFAULT_HOLD_DOWN),
            probabilities,
            active,
            run_for: args.run_for,
            summary_every: Duration::from_secs(args.summary_every.max(1)),
            print_verdicts: args.print_verdicts,
            json_logs: args.log_format == LogFormat::Json,
            profile: name,
            kafka,
        })
    }
}

/// Name of the webhook `alert_webhook` (`--alert-webhook`) gives.
pub const ALERT_WEBHOOK_NAME: &str = "alert_webhook";

/// The profile's webhooks, checked: unique names, http(s) URLs, a routing key for
/// PagerDuty and for PagerDuty only.
fn webhooks(
    settings: &[WebhookSettings],
    origin: &dyn Fn(&str) -> String,
) -> Result<Vec<Webhook>, ConfigError> {
    let mut out: Vec<Webhook> = Vec::new();
    for w in settings {
        let what = format!("webhook {:?} ({})", w.name, origin("webhooks"));
        if w.name.trim().is_empty() {
            return Err(ConfigError(format!(
                "a webhook without a name ({}): give each a `name`",
                origin("webhooks")
            )));
        }
        if w.name == ALERT_WEBHOOK_NAME || out.iter().any(|o| o.name == w.name) {
            return Err(ConfigError(format!(
                "{what}: the name is taken (each webhook needs its own, and {ALERT_WEBHOOK_NAME} is the flag's)"
            )));
        }
        let url = match (&w.url, w.format) {
            (Some(url), _) => url.0.clone(),
            (None, AlertFormat::Pagerduty) => PAGERDUTY_EVENTS_URL.to_owned(),
            (None, _) => return Err(ConfigError(format!("{what}: no `url`"))),
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError(format!(
                "{what}: url {} is not an http(s) URL",
                livecheck_core::redact::url(&url)
            )));
        }
        let routing_key = w
            .routing_key
            .clone()
            .filter(|k| !k.expose().trim().is_empty());
        match (w.format, &routing_key) {
            (AlertFormat::Pagerduty, None) => {
                return Err(ConfigError(format!(
                    "{what}: format pagerduty needs `routing_key` (the integration key of an Events API v2 service)"
                )))
            }
            (AlertFormat::Pagerduty, Some(_)) | (_, None) => {}
            (format, Some(_)) => {
                return Err(ConfigError(format!(
                    "{what}: `routing_key` is for format pagerduty, not {format}"
                )))
            }
        }
        out.push(Webhook {
            name: w.name.clone(),
            url,
            format: w.format,
            routing_key,
        });
    }
    Ok(out)
}

impl LiveConfig {
    /// Every webhook alerts go to: `alert_webhook` (format `json`) and the profile's.
    pub fn all_webhooks(&self) -> Vec<Webhook> {
        let flag = self.alert_webhook.iter().map(|url| Webhook {
            name: ALERT_WEBHOOK_NAME.to_owned(),
            url: url.clone(),
            format: AlertFormat::Json,
            routing_key: None,
        });
        flag.chain(self.webhooks.iter().cloned()).collect()
    }

    /// Who the configuration's changes of case settings are by, on the control topic: the
    /// profile file's name (`livecheck.toml`), or `defaults` without a profile (the check
    /// files and the flags).
    pub fn settings_origin(&self) -> String {
        match &self.reload {
            Some(args) => args.config.file_name().map_or_else(
                || args.config.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            None => "defaults".to_owned(),
        }
    }
}

fn load_profile(path: &Path, name: &str) -> Result<Profile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "cannot read {} for profile {name}: {e} (give the file with --config or LIVECHECK_CONFIG)",
            path.display()
        ))
    })?;
    let file: File =
        toml::from_str(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
    let known: Vec<_> = file.profiles.keys().cloned().collect();
    file.profiles.get(name).cloned().ok_or_else(|| {
        ConfigError(format!(
            "profile {name} is not in {} (profiles there: {})",
            path.display(),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile_path::TempPath {
        tempfile_path::TempPath::new(text)
    }

    mod tempfile_path {
        pub(super) struct TempPath(pub(super) std::path::PathBuf);
        impl TempPath {
            pub(super) fn new(text: &str) -> Self {
                let p =
                    std::env::temp_dir().join(format!("livecheck-{}.toml", uuid::Uuid::new_v4()));
                std::fs::write(&p, text).unwrap();
                Self(p)
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    fn args(file: &std::path::Path, profile: &str) -> LiveArgs {
        LiveArgs {
            profile: Some(profile.into()),
            config: file.to_owned(),
            summary_every: 10,
            ..LiveArgs::default()
        }
    }

    #[test]
    fn a_profile_is_read_and_flags_win() {
        let f = write(
            r#"
[profiles.staging]
brokers = "k1:9092"
topic_prefix = "staging-"
http_port = 9000
[profiles.staging.kafka]
"security.protocol" = "SASL_SSL"
[profiles.staging.cases."orders.place_order"]
probability = 0.25
active = false
"#,
        );
        let mut a = args(&f.0, "staging");
        a.http_port = Some(9100);
        a.kafka = vec!["sasl.mechanism=PLAIN".into()];
        let c = LiveConfig::resolve(&a).unwrap();
        let kafka = c.kafka.unwrap();
        assert_eq!(kafka.brokers, "k1:9092");
        assert_eq!(kafka.properties["security.protocol"], "SASL_SSL");
        assert_eq!(kafka.properties["sasl.mechanism"], "PLAIN");
        assert_eq!((c.topic_prefix.as_str(), c.http_port), ("staging-", 9100));
        assert_eq!(c.probabilities["orders.place_order"], 0.25);
        assert!(!c.active["orders.place_order"]);
        assert_eq!(c.group_id, "livecheck-staging");
    }

    #[test]
    fn wrong_settings_name_the_key_and_the_file() {
        let f = write("[profiles.staging]\nbrokerz = \"x\"\n");
        let err = LiveConfig::resolve(&args(&f.0, "staging"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `brokerz`"), "{err}");
        assert!(err.contains(&f.0.display().to_string()), "{err}");

        let valid = write("[profiles.staging]\nbrokers = \"b:1\"\n");
        let err = LiveConfig::resolve(&args(&valid.0, "production"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("profile production is not in"), "{err}");
        assert!(err.ends_with("(profiles there: staging)"), "{err}");

        let f = write("[profiles.staging]\nhttp_port = 1\n");
        let err = LiveConfig::resolve(&args(&f.0, "staging"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "no brokers for profile staging: set `brokers` in [profiles.staging] of"
            ),
            "{err}"
        );

        let f = write("[profiles.p]\nbrokers = \"b:1\"\n[profiles.p.cases.x]\nprobability = 2.0\n");
        let err = LiveConfig::resolve(&args(&f.0, "p"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "probability of case x is 2, not between 0 and 1 (`cases` of [profiles.p] in"
            ),
            "{err}"
        );

        let missing = LiveConfig::resolve(&args(
            std::path::Path::new("/nonexistent/livecheck.toml"),
            "p",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            missing.starts_with("cannot read /nonexistent/livecheck.toml for profile p"),
            "{missing}"
        );
    }

    /// Environment variables of the live CLI whose values are not secrets (shown by
    /// `--help`). Every other one must hide its value: a new secret-bearing setting is
    /// safe by default, and this list says what was decided.
    const SHOWN_ENV: [&str; 17] = [
        "LIVECHECK_PROFILE",
        "LIVECHECK_CONFIG",
        "LIVECHECK_BROKERS",
        "LIVECHECK_TOPIC_PREFIX",
        "LIVECHECK_GROUP_ID",
        "LIVECHECK_HTTP_PORT",
        "LIVECHECK_HTTP_HOST",
        "LIVECHECK_PUBLIC_URL",
        "LIVECHECK_CASE_PROBABILITY",
        "LIVECHECK_CASE_ACTIVE",
        "LIVECHECK_HOLD_DOWN",
        "LIVECHECK_HISTORY_WINDOW",
        "LIVECHECK_FETCH_WAIT",
        "LIVECHECK_LANES",
        "LIVECHECK_SUMMARY_EVERY",
        "LIVECHECK_PRINT_VERDICTS",
        "LIVECHECK_LOG_FORMAT",
    ];

    #[test]
    fn every_env_value_not_known_harmless_is_hidden_from_help() {
        use clap::CommandFactory as _;
        let command = LiveArgs::command();
        let mut checked = 0;
        for arg in command.get_arguments() {
            let Some(env) = arg.get_env() else { continue };
            let env = env.to_string_lossy();
            if !SHOWN_ENV.contains(&env.as_ref()) {
                assert!(
                    arg.is_hide_env_values_set(),
                    "--{} ({env}) may carry a secret: give it hide_env_values = true, or add {env} to SHOWN_ENV if its value is harmless",
                    arg.get_id()
                );
                checked += 1;
            }
        }
        assert!(
            checked >= 3,
            "LIVECHECK_KAFKA, _ALERT_WEBHOOK, _APP_URL at least"
        );
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let mut a = LiveArgs {
            brokers: Some("k1:9092".into()),
            alert_webhook: Some("https://hooks.slack.com/services/T0/B0/SENTINEL1".into()),
            app_url: Some("http://user:SENTINEL2@app:8080/".into()),
            kafka: vec![
                "sasl.password=SENTINEL3".into(),
                "sasl.jaas.config=SENTINEL4".into(),
                "security.protocol=SASL_SSL".into(),
            ],
            summary_every: 10,
            ..LiveArgs::default()
        };
        let config = LiveConfig::resolve(&a).unwrap();
        a.run_for = Some(Duration::from_secs(1));
        for shown in [
            format!("{a:?}"),
            format!("{config:?}"),
            format!("{config:#?}"),
        ] {
            for sentinel in ["SENTINEL1", "SENTINEL2", "SENTINEL3", "SENTINEL4"] {
                assert!(!shown.contains(sentinel), "{sentinel} in {shown}");
            }
            assert!(shown.contains("https://hooks.slack.com/…"), "{shown}");
            assert!(shown.contains("SASL_SSL"), "{shown}");
        }
    }

    #[test]
    fn history_window_comes_from_the_flag_the_profile_or_the_default() {
        let f = write("[profiles.p]\nbrokers = \"b:1\"\nhistory_window = \"6h\"\n");
        let mut a = args(&f.0, "p");
        assert_eq!(
            LiveConfig::resolve(&a).unwrap().history_window,
            Duration::from_secs(6 * 3600)
        );
        a.history_window = Some(Duration::from_secs(600));
        assert_eq!(
            LiveConfig::resolve(&a).unwrap().history_window,
            Duration::from_secs(600)
        );
        a.history_window = Some(Duration::ZERO);
        let err = LiveConfig::resolve(&a).unwrap_err().to_string();
        assert!(
            err.contains("--history-window") && err.contains("under a second"),
            "{err}"
        );
        let f = write("[profiles.p]\nbrokers = \"b:1\"\n");
        assert_eq!(
            LiveConfig::resolve(&args(&f.0, "p"))
                .unwrap()
                .history_window,
            DEFAULT_HISTORY_WINDOW
        );
        let f = write("[profiles.p]\nbrokers = \"b:1\"\nhistory_window = \"an hour\"\n");
        let err = LiveConfig::resolve(&args(&f.0, "p"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`history_window` of [profiles.p]"), "{err}");
    }

    #[test]
    fn lanes_come_from_the_flag_the_profile_or_the_cores_within_bounds() {
        let lanes = |a: &LiveArgs| LiveConfig::resolve(a).map(|c| c.lanes);
        let f = write("[profiles.p]\nbrokers = \"b:1\"\n");
        assert_eq!(lanes(&args(&f.0, "p")).unwrap(), default_lanes());
        assert!((1..=8).contains(&default_lanes()));
        let f = write("[profiles.p]\nbrokers = \"b:1\"\nlanes = 3\n");
        let mut a = args(&f.0, "p");
        assert_eq!(lanes(&a).unwrap(), 3);
        a.lanes = Some(2);
        assert_eq!(lanes(&a).unwrap(), 2, "the flag wins over the profile");
        for wrong in [0, MAX_LANES + 1] {
            a.lanes = Some(wrong);
            let err = lanes(&a).unwrap_err().to_string();
            assert!(
                err.contains("--lanes (LIVECHECK_LANES)") && err.contains("use 1 to 256 lanes"),
                "{err}"
            );
        }
        let f = write("[profiles.p]\nbrokers = \"b:1\"\nlanes = 0\n");
        let err = lanes(&args(&f.0, "p")).unwrap_err().to_string();
        assert!(err.contains("`lanes` of [profiles.p]"), "{err}");
    }

    #[test]
    fn fetch_wait_comes_from_the_flag_the_profile_or_the_default_within_bounds() {
        let f = write("[profiles.p]\nbrokers = \"b:1\"\nfetch_wait = \"500ms\"\n");
        let mut a = args(&f.0, "p");
        let fetch_wait = |a: &LiveArgs| LiveConfig::resolve(a).map(|c| c.fetch_wait);
        assert_eq!(fetch_wait(&a).unwrap(), Duration::from_millis(500));
        a.fetch_wait = Some(Duration::from_millis(3));
        assert_eq!(fetch_wait(&a).unwrap(), Duration::from_millis(3));
        for wrong in [
            Duration::ZERO,
            Duration::from_micros(500),
            Duration::from_micros(1_900),
            Duration::from_secs(2),
        ] {
            a.fetch_wait = Some(wrong);
            let err = fetch_wait(&a).unwrap_err().to_string();
            assert!(
                err.contains("--fetch-wait") && err.contains("from 1ms to 1000ms"),
                "{err}"
            );
        }
        a.fetch_wait = None;
        a.kafka = vec!["fetch.wait.max.ms=100".into()];
        let err = fetch_wait(&a).unwrap_err().to_string();
        assert!(err.contains("set it with fetch_wait"), "{err}");
        let f = write("[profiles.p]\nbrokers = \"b:1\"\n");
        assert_eq!(
            fetch_wait(&args(&f.0, "p")).unwrap(),
            livecheck_core::DEFAULT_FETCH_WAIT
        );
        let f = write("[profiles.p]\nbrokers = \"b:1\"\nfetch_wait = \"0ms\"\n");
        let err = fetch_wait(&args(&f.0, "p")).unwrap_err().to_string();
        assert!(err.contains("`fetch_wait` of [profiles.p]"), "{err}");
    }

    #[test]
    fn webhooks_come_with_a_format_and_their_secrets_never_show() {
        let f = write(
            r#"
[profiles.production]
brokers = "b:1"
alert_webhook = "http://127.0.0.1:9000/alerts"
public_url = "https://livecheck.example.com/"

[[profiles.production.webhooks]]
name = "oncall"
format = "pagerduty"
routing_key = "R0UTINGKEYSENTINEL"

[[profiles.production.webhooks]]
name = "chat"
format = "slack"
url = "https://hooks.slack.com/services/T0/B0/SLACKSENTINEL"

[[profiles.production.webhooks]]
name = "am"
format = "alertmanager"
url = "http://127.0.0.1:9093/hook"
"#,
        );
        let c = LiveConfig::resolve(&args(&f.0, "production")).unwrap();
        assert_eq!(
            c.public_url.as_deref(),
            Some("https://livecheck.example.com")
        );
        let all = c.all_webhooks();
        let shape: Vec<_> = all
            .iter()
            .map(|w| (w.name.as_str(), w.format, w.url.as_str()))
            .collect();
        assert_eq!(
            shape,
            [
                (
                    ALERT_WEBHOOK_NAME,
                    AlertFormat::Json,
                    "http://127.0.0.1:9000/alerts"
                ),
                ("oncall", AlertFormat::Pagerduty, PAGERDUTY_EVENTS_URL),
                (
                    "chat",
                    AlertFormat::Slack,
                    "https://hooks.slack.com/services/T0/B0/SLACKSENTINEL"
                ),
                (
                    "am",
                    AlertFormat::Alertmanager,
                    "http://127.0.0.1:9093/hook"
                ),
            ]
        );
        assert_eq!(
            all[1].routing_key.as_ref().map(|k| k.expose()),
            Some("R0UTINGKEYSENTINEL")
        );
        let profile = load_profile(&f.0, "production").unwrap();
        for shown in [format!("{c:?}"), format!("{c:#?}"), format!("{profile:?}")] {
            for secret in ["R0UTINGKEYSENTINEL", "SLACKSENTINEL"] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
        }
    }

    #[test]
    fn a_wrong_webhook_is_refused_with_its_name_and_never_its_secret() {
        for (webhook, expected) in [
            (
                "name = \"x\"\nformat = \"pagerduty\"",
                "webhook \"x\" (`webhooks` of [profiles.p] in",
            ),
            (
                "name = \"x\"\nformat = \"pagerduty\"",
                "needs `routing_key`",
            ),
            (
                "name = \"x\"\nformat = \"slack\"\nurl = \"http://h/SECRET\"\nrouting_key = \"k\"",
                "`routing_key` is for format pagerduty, not slack",
            ),
            ("name = \"x\"\nformat = \"slack\"", "no `url`"),
            (
                "name = \"x\"\nurl = \"ftp://h/SECRET\"",
                "url ftp://h/… is not an http(s) URL",
            ),
            (
                "name = \"alert_webhook\"\nurl = \"http://h/\"",
                "the name is taken",
            ),
            (
                "name = \"x\"\nformat = \"teams\"\nurl = \"http://h/\"",
                "unknown variant `teams`",
            ),
        ] {
            let f = write(&format!(
                "[profiles.p]\nbrokers = \"b:1\"\n[[profiles.p.webhooks]]\n{webhook}\n"
            ));
            let err = LiveConfig::resolve(&args(&f.0, "p"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{webhook}: {err}");
            assert!(!err.contains("SECRET"), "{err}");
        }
        let f = write(
            "[profiles.p]\nbrokers = \"b:1\"\n[[profiles.p.webhooks]]\nname = \"a\"\nurl = \"http://h/\"\n[[profiles.p.webhooks]]\nname = \"a\"\nurl = \"http://i/\"\n",
        );
        let err = LiveConfig::resolve(&args(&f.0, "p"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("the name is taken"), "{err}");
        let f = write("[profiles.p]\nbrokers = \"b:1\"\npublic_url = \"livecheck:8099\"\n");
        let err = LiveConfig::resolve(&args(&f.0, "p"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not an http(s) URL"), "{err}");
    }

    #[test]
    fn hold_down_comes_from_the_flag_the_profile_or_the_default() {
        let f = write("[profiles.p]\nbrokers = \"b:1\"\nhold_down_secs = 7\n");
        let mut a = args(&f.0, "p");
        assert_eq!(
            LiveConfig::resolve(&a).unwrap().hold_down,
            Duration::from_secs(7)
        );
        a.hold_down = Some(Duration::from_secs(2));
        assert_eq!(
            LiveConfig::resolve(&a).unwrap().hold_down,
            Duration::from_secs(2)
        );
        let f = write("[profiles.p]\nbrokers = \"b:1\"\n");
        assert_eq!(
            LiveConfig::resolve(&args(&f.0, "p")).unwrap().hold_down,
            DEFAULT_HOLD_DOWN
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("1e300h").is_err());
    }

    #[test]
    fn signing_keys_come_from_the_profile_or_the_flag_and_never_show() {
        let secret = "profile-secret-0123456789";
        let f = write(&format!(
            "[profiles.staging]\nbrokers = \"b:1\"\nsigning_keys = \"k1:{secret}\"\n"
        ));
        let c = LiveConfig::resolve(&args(&f.0, "staging")).unwrap();
        assert_eq!(c.signing_keys.as_ref().unwrap().current_kid(), "k1");
        let mut a = args(&f.0, "staging");
        a.signing_keys = Some(SecretString::new(format!(
            "k2:flag-secret-0123456789,k1:{secret}"
        )));
        let c = LiveConfig::resolve(&a).unwrap();
        let keys = c.signing_keys.as_ref().unwrap();
        assert_eq!(keys.kids().collect::<Vec<_>>(), ["k2", "k1"]);
        for shown in [format!("{a:?}"), format!("{c:?}")] {
            assert!(
                !shown.contains(secret) && !shown.contains("flag-secret"),
                "{shown}"
            );
        }
        a.signing_keys = Some(SecretString::new("k1:short-secret"));
        let err = LiveConfig::resolve(&a).unwrap_err().to_string();
        assert!(err.starts_with("--signing-keys (LIVECHECK_SIGNING_KEYS): the secret of signing key \"k1\" is 12 bytes"), "{err}");
        assert!(!err.contains("short-secret"), "{err}");
        let f = write("[profiles.staging]\nbrokers = \"b:1\"\nsigning_keys = \"nocolon\"\n");
        let err = LiveConfig::resolve(&args(&f.0, "staging"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`signing_keys` of [profiles.staging]"),
            "{err}"
        );
        assert!(!err.contains("nocolon"), "{err}");
        // --help never shows the value of LIVECHECK_SIGNING_KEYS.
        let command = <LiveArgs as clap::CommandFactory>::command();
        let arg = command
            .get_arguments()
            .find(|a| a.get_id() == "signing_keys")
            .unwrap();
        assert!(arg.is_hide_env_values_set());
    }

    #[test]
    fn the_admin_token_comes_from_the_flag_or_the_profile_and_never_shows() {
        let secret = "profile-token-0123456789";
        let f = write(&format!(
            "[profiles.p]\nbrokers = \"b:1\"\nadmin_token = \"{secret}\"\n"
        ));
        let c = LiveConfig::resolve(&args(&f.0, "p")).unwrap();
        assert_eq!(
            c.admin_token.as_ref().map(SecretString::expose),
            Some(secret)
        );
        // The flag (or LIVECHECK_ADMIN_TOKEN, which clap puts in the same field) wins.
        let mut a = args(&f.0, "p");
        a.admin_token = Some(SecretString::new("flag-token-0123456789"));
        let c = LiveConfig::resolve(&a).unwrap();
        assert_eq!(
            c.admin_token.as_ref().map(SecretString::expose),
            Some("flag-token-0123456789")
        );
        for shown in [format!("{a:?}"), format!("{c:?}"), format!("{c:#?}")] {
            assert!(
                !shown.contains(secret) && !shown.contains("flag-token"),
                "{shown}"
            );
        }
        // None configured (or empty): the API is read-only.
        let f2 = write("[profiles.p]\nbrokers = \"b:1\"\n");
        assert!(LiveConfig::resolve(&args(&f2.0, "p"))
            .unwrap()
            .admin_token
            .is_none());
        a.admin_token = Some(SecretString::new(" "));
        a.config = f2.0.clone();
        assert!(LiveConfig::resolve(&a).unwrap().admin_token.is_none());
        // Too short, or with white space: refused, without the token in the message.
        a.admin_token = Some(SecretString::new("short-tok"));
        let err = LiveConfig::resolve(&a).unwrap_err().to_string();
        assert_eq!(err, "--admin-token (LIVECHECK_ADMIN_TOKEN): the token is 9 characters, use at least 16 (e.g. `openssl rand -hex 32`)");
        let f3 =
            write("[profiles.p]\nbrokers = \"b:1\"\nadmin_token = \"with space 0123456789\"\n");
        let err = LiveConfig::resolve(&args(&f3.0, "p"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("`admin_token` of [profiles.p] in")
                && err.ends_with("the token contains white space or control characters (it travels in an HTTP header)"),
            "{err}"
        );
        assert!(!err.contains("0123456789"), "{err}");
        let command = <LiveArgs as clap::CommandFactory>::command();
        let arg = command
            .get_arguments()
            .find(|a| a.get_id() == "admin_token")
            .unwrap();
        assert!(arg.is_hide_env_values_set());
    }

    #[test]
    fn case_settings_and_rollout_plans_are_read() {
        let f = write(
            r#"
[profiles.p]
brokers = "b:1"
[profiles.p.cases."orders.place_order"]
sampling = "key"
test_expires = "5m"
active = false
[profiles.p.cases."orders.place_order".rollout]
steps = [0.001, 0.01, 0.1, 1.0]
every = "10m"
max_failure_rate = 0.02
[profiles.p.cases.refund]
probability = 0.5
"#,
        );
        let c = LiveConfig::resolve(&args(&f.0, "p")).unwrap();
        let plan = &c.rollouts["orders.place_order"];
        assert_eq!(plan.steps, [0.001, 0.01, 0.1, 1.0]);
        assert_eq!(plan.every(), Duration::from_secs(600));
        assert_eq!(plan.max_failure_rate, 0.02);
        assert_eq!(plan.min_runs, DEFAULT_MIN_RUNS);
        assert_eq!(c.sampling["orders.place_order"], SamplingName::Key);
        assert_eq!(
            c.test_expires["orders.place_order"],
            Duration::from_secs(300)
        );
        assert!(!c.active["orders.place_order"]);
        assert_eq!(c.probabilities["refund"], 0.5);
        assert!(!c.probabilities.contains_key("orders.place_order"));
        assert_eq!(
            c.settings_origin(),
            f.0.file_name().unwrap().to_string_lossy()
        );
        assert!(c.reload.is_some());
    }

    #[test]
    fn wrong_rollout_sections_name_the_key() {
        let err = |body: &str| {
            let f = write(&format!(
                "[profiles.p]\nbrokers = \"b:1\"\n[profiles.p.cases.c]\n{body}"
            ));
            let e = LiveConfig::resolve(&args(&f.0, "p"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&f.0.display().to_string()) || e.contains("unknown"),
                "{e}"
            );
            e
        };
        let e = err("[profiles.p.cases.c.rollout]\nsteps = [0.1, 0.01]\nevery = \"1m\"\n");
        assert!(
            e.starts_with("`rollout` of [profiles.p.cases.\"c\"] in")
                && e.ends_with(": `steps` must increase: 0.01 comes after 0.1"),
            "{e}"
        );
        let e = err("[profiles.p.cases.c.rollout]\nsteps = [0.1, 1.0]\nevery = \"soon\"\n");
        assert!(
            e.starts_with("`rollout.every` of [profiles.p.cases.\"c\"] in")
                && e.ends_with("\"soon\" is not a duration (try 30s, 5m, 1h)"),
            "{e}"
        );
        let e = err("[profiles.p.cases.c.rollout]\nsteps = []\nevery = \"1m\"\n");
        assert!(e.contains("`steps` is empty"), "{e}");
        let e = err("[profiles.p.cases.c.rollout]\nsteps = [0.5]\nevery = \"1m\"\nmin_runs = 0\n");
        assert!(e.contains("`min_runs` is 0"), "{e}");
        let e = err(
            "[profiles.p.cases.c.rollout]\nsteps = [0.5]\nevery = \"1m\"\nmax_failure_rate = 2.0\n",
        );
        assert!(
            e.ends_with("`max_failure_rate` is 2, not between 0 and 1"),
            "{e}"
        );
        let e = err("[profiles.p.cases.c.rollout]\nsteps = [0.5]\n");
        assert!(e.contains("missing field `every`"), "{e}");
        let e = err("[profiles.p.cases.c.rollout]\nsteps = [0.5]\nevery = \"1m\"\nstep = 1\n");
        assert!(e.contains("unknown field `step`"), "{e}");
        let e =
            err("probability = 0.5\n[profiles.p.cases.c.rollout]\nsteps = [0.5]\nevery = \"1m\"\n");
        assert!(
            e.contains("are both set: the roll-out decides the probability (remove one)"),
            "{e}"
        );
        let e = err("sampling = \"sometimes\"\n");
        assert!(e.contains("unknown variant `sometimes`"), "{e}");
        let e = err("test_expires = \"0s\"\n");
        assert!(
            e.contains("is zero: every test would expire at once"),
            "{e}"
        );
        // A flag's probability for a case with a plan is refused too.
        let f = write("[profiles.p]\nbrokers = \"b:1\"\n[profiles.p.cases.c.rollout]\nsteps = [0.5, 1.0]\nevery = \"1m\"\n");
        let mut a = args(&f.0, "p");
        a.case_probability = vec!["c=0.3".into()];
        let e = LiveConfig::resolve(&a).unwrap_err().to_string();
        assert!(
            e.starts_with("--case-probability c=0.3: case c has a roll-out plan"),
            "{e}"
        );
    }

    #[test]
    fn the_example_settings_file_resolves() {
        let file = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../livecheck.toml"));
        for profile in ["staging", "production"] {
            let c = LiveConfig::resolve(&args(file, profile))
                .unwrap_or_else(|e| panic!("profile {profile}: {e}"));
            assert_eq!(c.settings_origin(), "livecheck.toml");
        }
    }
}
