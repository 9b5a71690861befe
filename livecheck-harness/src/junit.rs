//! JUnit XML reports for CI systems.

use std::fmt::Write as _;
use std::time::Duration;

/// One trial's outcome.
#[derive(Debug, Clone)]
pub struct TrialRecord {
    /// Trial name (`module::case`).
    pub name: String,
    /// Time taken.
    pub duration: Duration,
    /// `None` when it passed, else the failure text.
    pub failure: Option<String>,
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' && c != '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// The XML for a suite of trials.
pub fn render(suite: &str, records: &[TrialRecord]) -> String {
    let failures = records.iter().filter(|r| r.failure.is_some()).count();
    let total: f64 = records.iter().map(|r| r.duration.as_secs_f64()).sum();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites><testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" time=\"{total:.3}\">",
        escape(suite),
        records.len()
    );
    for r in records {
        let (class, name) = r.name.rsplit_once("::").unwrap_or((suite, &r.name));
        let _ = write!(
            xml,
            "  <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
            escape(class),
            escape(name),
            r.duration.as_secs_f64()
        );
        match &r.failure {
            None => xml.push_str("/>\n"),
            Some(text) => {
                let first = text.lines().next().unwrap_or("failed");
                let _ = writeln!(
                    xml,
                    "><failure message=\"{}\">{}</failure></testcase>",
                    escape(first),
                    escape(text)
                );
            }
        }
    }
    xml.push_str("</testsuite></testsuites>\n");
    xml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_escaped_and_counted() {
        let xml = render(
            "orders",
            &[
                TrialRecord {
                    name: "orders::place_order".into(),
                    duration: Duration::from_millis(1500),
                    failure: None,
                },
                TrialRecord {
                    name: "orders::cancel".into(),
                    duration: Duration::ZERO,
                    failure: Some("FAIL <side> & \"x\"\nline 2".into()),
                },
            ],
        );
        assert!(xml.contains("tests=\"2\" failures=\"1\""));
        assert!(
            xml.contains("<testcase classname=\"orders\" name=\"place_order\" time=\"1.500\"/>")
        );
        assert!(xml.contains("message=\"FAIL &lt;side&gt; &amp; &quot;x&quot;\""));
    }
}
