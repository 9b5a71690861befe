//! `sample-keys`: which business keys a service samples for a case, without a broker.
//!
//! `sample-keys --case orders.place_order --probability 0.25 account-1 account-2` (or the
//! keys one per line on standard input) prints, per key in order, `sampled` or `skipped`,
//! the key's draw and the key: the decision every service makes with
//! `Trigger::maybe_trigger_for_key`, to compare with another implementation (a Faust or
//! Java service) or another version.

use std::io::{self, BufRead as _, Write as _};
use std::process::ExitCode;

use clap::Parser;
use livecheck_core::Trigger;

/// Prints whether each key is sampled for a case at a probability.
#[derive(Debug, Parser)]
#[command(name = "sample-keys")]
struct Args {
    /// The case name.
    #[arg(long)]
    case: String,
    /// The case's probability, between 0 and 1.
    #[arg(long, value_parser = probability)]
    probability: f64,
    /// The keys; none: read them from standard input, one per line.
    keys: Vec<String>,
}

fn probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a number between 0 and 1")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let trigger = Trigger::new(args.case).probability(args.probability);
    match print_decisions(&trigger, args.keys) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn print_decisions(trigger: &Trigger, keys: Vec<String>) -> io::Result<()> {
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut print = |key: &str| {
        let decision = if trigger.samples_key(key) {
            "sampled"
        } else {
            "skipped"
        };
        writeln!(out, "{decision} {} {key}", trigger.key_draw(key))
    };
    if keys.is_empty() {
        for line in io::stdin().lock().lines() {
            print(&line?)?;
        }
    } else {
        for key in &keys {
            print(key)?;
        }
    }
    out.flush()
}
