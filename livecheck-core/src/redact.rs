//! Keeping secrets out of logs, `Debug` output, status pages and APIs.
//!
//! Kafka properties whose key names a secret (`password`, `secret`, `sasl.jaas`, `ssl.key`,
//! `token`) show as [`REDACTED`]; URLs show as scheme and host only (a Slack webhook's path
//! is its token, and `user:password@` is a credential).

use std::collections::BTreeMap;

/// What a secret value is replaced with.
pub const REDACTED: &str = "<redacted>";

/// Parts of a property key that mark its value as secret (compared in lowercase).
const SECRET_KEY_PARTS: [&str; 5] = ["password", "secret", "sasl.jaas", "ssl.key", "token"];

/// Whether the value of the client property `key` is a secret.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_KEY_PARTS.iter().any(|part| key.contains(part))
}

/// `value`, or [`REDACTED`] when `key` names a secret.
pub fn property_value<'a>(key: &str, value: &'a str) -> &'a str {
    if is_secret_key(key) {
        REDACTED
    } else {
        value
    }
}

/// The properties with their secret values redacted.
pub fn properties(properties: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    properties
        .iter()
        .map(|(k, v)| (k.as_str(), property_value(k, v)))
        .collect()
}

/// A `key=value` setting with its value redacted when the key names a secret.
pub fn setting(setting: &str) -> String {
    match setting.split_once('=') {
        Some((key, value)) => format!("{key}={}", property_value(key.trim(), value)),
        None => setting.to_owned(),
    }
}

/// A URL as scheme and host (and port) only: `https://hooks.slack.com/…`. Anything that
/// does not look like a URL is redacted whole.
pub fn url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return REDACTED.to_owned();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Credentials come before the last `@` of the authority.
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let cut = authority.len() < rest.len() || host.len() < authority.len();
    format!("{scheme}://{host}{}", if cut { "/…" } else { "" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_are_recognised() {
        for key in [
            "sasl.password",
            "SASL.PASSWORD",
            "ssl.key.password",
            "ssl.key.pem",
            "ssl.keystore.password",
            "sasl.jaas.config",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.token.endpoint.url",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in [
            "bootstrap.servers",
            "security.protocol",
            "sasl.mechanism",
            "sasl.username",
            "linger.ms",
        ] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    #[test]
    fn properties_and_settings_hide_secret_values() {
        let mut props = BTreeMap::new();
        props.insert("sasl.password".to_owned(), "hunter2".to_owned());
        props.insert("sasl.username".to_owned(), "alice".to_owned());
        let shown = format!("{:?}", properties(&props));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("alice") && shown.contains(REDACTED),
            "{shown}"
        );
        assert_eq!(setting("sasl.password=hunter2"), "sasl.password=<redacted>");
        assert_eq!(setting("linger.ms=5"), "linger.ms=5");
    }

    #[test]
    fn urls_keep_scheme_and_host_only() {
        assert_eq!(
            url("https://hooks.slack.com/services/T000/B000/XXXXSECRET"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            url("http://user:pw@10.0.0.1:8080/x?token=1"),
            "http://10.0.0.1:8080/…"
        );
        assert_eq!(url("http://127.0.0.1:9000"), "http://127.0.0.1:9000");
        assert_eq!(url("not a url with a secret"), REDACTED);
    }
}
