//! Signed test contexts: an HMAC-SHA256 over a context's id, case name, issue and expiry
//! times (in their canonical header forms), made with a shared secret named by a key id, and
//! over its arguments when it has any.
//!
//! The signature travels in the `LiveCheck-Test-Signature` header (HTTP and Kafka) and in the
//! `TestExecution` record. A [`crate::LiveCheck`] client configured with [`SigningKeys`]
//! ([`crate::LiveCheck::with_signing`]) signs the contexts it creates and drops incoming
//! contexts that are unsigned, forged, tampered or expired.
//!
//! Two forms, told apart by their version tag:
//! - `v1;kid=<kid>;sig=<base64url>` for a context signed with `null` arguments: the four
//!   fields only, exactly as before arguments were signed. Arguments a service sets later
//!   (its own view, on a test that came in without any) are not covered; they stay in the
//!   `TestExecution` record and are not sent on ([`crate::headers::encode_with`]), and a
//!   context read from headers with arguments and a `v1` signature is rejected
//!   ([`SigningKeys::verify_carried_at`]).
//! - `v2;kid=<kid>;sig=<base64url>` for a context signed with arguments: the four fields and
//!   the SHA-256 digest of the arguments' canonical JSON
//!   ([`crate::headers::arguments_json`], the text of the `LiveCheck-Test-Arguments`
//!   header). A changed, added or removed argument breaks the signature.
//!
//! Keys rotate: the first key signs, every configured key verifies. To roll a key over,
//! configure `new:…,old:…` everywhere (verifiers first), then `new:…` alone once no context
//! signed with `old` is in flight.
//!
//! ```
//! use std::time::Duration;
//! use livecheck_core::signing::SigningKeys;
//! use livecheck_core::TestContext;
//!
//! let keys: SigningKeys = "k2:a-new-secret-of-32-bytes-or-so,k1:the-old-secret-still-accepted"
//!     .parse()?;
//! let mut context = TestContext::new("orders.place_order", Duration::from_secs(60));
//! context.signature = Some(keys.sign(&context));
//! assert!(keys.verify(&context).is_ok());
//! // Debug never shows a secret.
//! assert!(!format!("{keys:?}").contains("a-new-secret"));
//! # Ok::<(), livecheck_core::signing::KeysError>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};

use crate::context::TestContext;
use crate::headers::{self, ContextError};

/// Environment variable read by [`SigningKeys::from_env`]: `kid:secret[,kid:secret...]`.
pub const SIGNING_KEYS_ENV: &str = "LIVECHECK_SIGNING_KEYS";

/// Shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// Longest key id accepted, in bytes.
pub const MAX_KID_LEN: usize = 32;

/// Version tag of a signature over the four fields (arguments `null` when signed).
const VERSION: &str = "v1";

/// Version tag of a signature over the four fields and the digest of the arguments.
const VERSION_WITH_ARGUMENTS: &str = "v2";

/// Length of an HMAC-SHA256 tag.
const TAG_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// One key: its id and the HMAC keyed with its secret (the raw secret is not kept).
#[derive(Clone)]
struct Key {
    kid: String,
    mac: HmacSha256,
}

/// The keys of a client: the current one signs, every one verifies.
///
/// Its `Debug` shows the key ids, never a secret.
#[derive(Clone)]
pub struct SigningKeys {
    /// Never empty; the first key signs.
    keys: Arc<[Key]>,
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeys")
            .field("current", &self.current_kid())
            .field("accepted", &self.kids().collect::<Vec<_>>())
            .field("secrets", &"<redacted>")
            .finish()
    }
}

/// Why signing keys could not be configured. No variant holds or prints a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    /// The key list is empty.
    #[error("no signing keys given (expected `kid:secret[,kid:secret...]`; the first one signs)")]
    Empty,
    /// An entry of the list has no `:`.
    #[error("signing key entry {index} has no `:` between its key id and its secret (expected `kid:secret`)")]
    MissingSeparator {
        /// 1-based position of the entry in the list.
        index: usize,
    },
    /// A key id is empty, too long or has characters other than `A-Z a-z 0-9 . _ -`.
    #[error("signing key entry {index} has an invalid key id: {why} (1 to {max} of `A-Z a-z 0-9 . _ -`)", max = MAX_KID_LEN)]
    BadKeyId {
        /// 1-based position of the entry in the list.
        index: usize,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Two keys have the same id.
    #[error("signing key id {kid:?} appears more than once")]
    DuplicateKeyId {
        /// The repeated id.
        kid: String,
    },
    /// A secret is shorter than [`MIN_SECRET_LEN`].
    #[error("the secret of signing key {kid:?} is {len} bytes long; at least {min} are needed", min = MIN_SECRET_LEN)]
    ShortSecret {
        /// The key id.
        kid: String,
        /// The secret's length.
        len: usize,
    },
    /// The environment variable is not Unicode.
    #[error("environment variable {SIGNING_KEYS_ENV} is not valid Unicode")]
    NotUnicode,
}

impl SigningKeys {
    /// One key, which signs and verifies.
    pub fn new(kid: impl Into<String>, secret: impl AsRef<[u8]>) -> Result<Self, KeysError> {
        let key = make_key(1, kid.into(), secret.as_ref())?;
        Ok(Self {
            keys: Arc::from(vec![key]),
        })
    }

    /// Adds a key that verifies but does not sign (the old key during a roll-over).
    pub fn accept_also(
        self,
        kid: impl Into<String>,
        secret: impl AsRef<[u8]>,
    ) -> Result<Self, KeysError> {
        let mut keys = self.keys.to_vec();
        let key = make_key(keys.len() + 1, kid.into(), secret.as_ref())?;
        if keys.iter().any(|k| k.kid == key.kid) {
            return Err(KeysError::DuplicateKeyId { kid: key.kid });
        }
        keys.push(key);
        Ok(Self {
            keys: Arc::from(keys),
        })
    }

    /// Parses `kid:secret[,kid:secret...]` (the first key signs; spaces around entries are
    /// ignored). A secret may contain `:` but not `,`.
    pub fn parse(spec: &str) -> Result<Self, KeysError> {
        let mut keys: Option<Self> = None;
        for (i, entry) in spec
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let index = i + 1;
            let (kid, secret) = entry
                .split_once(':')
                .ok_or(KeysError::MissingSeparator { index })?;
            keys = Some(match keys {
                None => Self::new(kid.trim(), secret)?,
                Some(keys) => keys.accept_also(kid.trim(), secret)?,
            });
        }
        keys.ok_or(KeysError::Empty)
    }

    /// The keys in [`SIGNING_KEYS_ENV`], or `None` when it is unset or blank.
    pub fn from_env() -> Result<Option<Self>, KeysError> {
        match std::env::var(SIGNING_KEYS_ENV) {
            Ok(spec) if spec.trim().is_empty() => Ok(None),
            Ok(spec) => Self::parse(&spec).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(KeysError::NotUnicode),
        }
    }

    /// The id of the key that signs.
    pub fn current_kid(&self) -> &str {
        &self.keys[0].kid
    }

    /// The ids of every key accepted to verify, the current one first.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.kid.as_str())
    }

    /// The signature header value of `context` with the current key:
    /// `v1;kid=<kid>;sig=<base64url>` when its arguments are `null` (the four fields only),
    /// `v2;kid=<kid>;sig=<base64url>` otherwise (the arguments too).
    pub fn sign(&self, context: &TestContext) -> String {
        let key = &self.keys[0];
        let version = if context.arguments.is_null() {
            VERSION
        } else {
            VERSION_WITH_ARGUMENTS
        };
        let tag = mac_of(key, version, context).finalize().into_bytes();
        format!(
            "{version};kid={};sig={}",
            key.kid,
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// Checks the test id and the signature of `context` (not its expiry: see
    /// [`SigningKeys::verify_at`]). The comparison is constant-time. A `v2` signature covers
    /// the arguments; a `v1` one does not (arguments set after signing are not checked here:
    /// see [`SigningKeys::verify_carried_at`] for contexts read from headers).
    pub fn verify(&self, context: &TestContext) -> Result<(), ContextError> {
        headers::check_test_id(&context.id)?;
        let id = || context.id.clone();
        let value = context
            .signature
            .as_deref()
            .ok_or_else(|| ContextError::Unsigned { id: id() })?;
        let malformed = |why| ContextError::MalformedSignature { id: id(), why };
        let (version, kid, sig) = split_signature(value).map_err(malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| malformed("the signature is not unpadded base64url"))?;
        if tag.len() != TAG_LEN {
            return Err(malformed("the signature is not 32 bytes long"));
        }
        let key =
            self.keys
                .iter()
                .find(|k| k.kid == kid)
                .ok_or_else(|| ContextError::UnknownKey {
                    id: id(),
                    kid: kid.chars().take(MAX_KID_LEN).collect(),
                })?;
        mac_of(key, version, context)
            .verify_slice(&tag)
            .map_err(|_| ContextError::BadSignature {
                id: id(),
                kid: key.kid.clone(),
            })
    }

    /// As [`SigningKeys::verify`], and the context must not have expired at `now`.
    pub fn verify_at(&self, context: &TestContext, now: DateTime<Utc>) -> Result<(), ContextError> {
        self.verify(context)?;
        if context.is_expired_at(now) {
            return Err(ContextError::Expired {
                id: context.id.clone(),
                expires_at: context.expires_at,
            });
        }
        Ok(())
    }

    /// As [`SigningKeys::verify_at`], for a context read from headers: arguments it carries
    /// must be covered by its signature. A sender never puts arguments next to a `v1`
    /// signature, so arguments there were added on the way
    /// ([`ContextError::UnsignedArguments`]).
    pub fn verify_carried_at(
        &self,
        context: &TestContext,
        now: DateTime<Utc>,
    ) -> Result<(), ContextError> {
        self.verify_at(context, now)?;
        match &context.signature {
            Some(signature) if !context.arguments.is_null() && !covers_arguments(signature) => {
                let kid = split_signature(signature).map_or("", |(_, kid, _)| kid);
                Err(ContextError::UnsignedArguments {
                    id: context.id.clone(),
                    kid: kid.to_owned(),
                })
            }
            _ => Ok(()),
        }
    }
}

impl FromStr for SigningKeys {
    type Err = KeysError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        Self::parse(spec)
    }
}

/// A string that holds secrets (e.g. a `kid:secret,...` key list before it is parsed): its
/// `Debug` and `Display` print `<redacted>`. For flags and settings structs that derive
/// `Debug`.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret text itself: do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl FromStr for SecretString {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

fn make_key(index: usize, kid: String, secret: &[u8]) -> Result<Key, KeysError> {
    let why = if kid.is_empty() {
        Some("it is empty")
    } else if kid.len() > MAX_KID_LEN {
        Some("it is too long")
    } else if !kid
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("it has a character that is not allowed")
    } else {
        None
    };
    if let Some(why) = why {
        return Err(KeysError::BadKeyId { index, why });
    }
    if secret.len() < MIN_SECRET_LEN {
        return Err(KeysError::ShortSecret {
            kid,
            len: secret.len(),
        });
    }
    // HMAC takes a key of any length: this cannot fail.
    let mac = HmacSha256::new_from_slice(secret).map_err(|_| KeysError::ShortSecret {
        kid: kid.clone(),
        len: secret.len(),
    })?;
    Ok(Key { kid, mac })
}

/// Whether a signature header value is of the form that covers the arguments (`v2`).
pub(crate) fn covers_arguments(signature: &str) -> bool {
    signature
        .strip_prefix(VERSION_WITH_ARGUMENTS)
        .is_some_and(|rest| rest.starts_with(';'))
}

/// The MAC of the version, key id and the four fields in their canonical header forms, then
/// (version `v2`) the SHA-256 digest of the arguments' canonical JSON, each prefixed by its
/// length (so that no two field lists give the same input). Version `v1` gives exactly the
/// MAC of the signatures made before arguments were signed.
fn mac_of(key: &Key, version: &str, context: &TestContext) -> HmacSha256 {
    let mut mac = key.mac.clone();
    let mut put = |value: &[u8]| {
        mac.update(&(value.len() as u64).to_be_bytes());
        mac.update(value);
    };
    put(version.as_bytes());
    put(key.kid.as_bytes());
    headers::encode_fields_with(context, |_, value| put(value.as_bytes()));
    if version == VERSION_WITH_ARGUMENTS {
        let json = headers::arguments_json(&context.arguments);
        put(&Sha256::digest(json.as_bytes()));
    }
    mac
}

/// `v1;kid=<kid>;sig=<sig>` (or `v2;...`) into `(version, kid, sig)`.
fn split_signature(value: &str) -> Result<(&str, &str, &str), &'static str> {
    let mut parts = value.split(';');
    let version = parts
        .next()
        .filter(|v| [VERSION, VERSION_WITH_ARGUMENTS].contains(v))
        .ok_or("it does not start with `v1;` or `v2;`")?;
    let kid = parts
        .next()
        .and_then(|p| p.strip_prefix("kid="))
        .ok_or("it has no `kid=` after the version")?;
    let sig = parts
        .next()
        .and_then(|p| p.strip_prefix("sig="))
        .ok_or("it has no `sig=` after the key id")?;
    if parts.next().is_some() {
        return Err("it has more than three `;`-separated parts");
    }
    if kid.is_empty() {
        return Err("the key id is empty");
    }
    Ok((version, kid, sig))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::Duration as ChronoDuration;

    use super::*;

    const OLD: &str = "old-secret-0123456789abcdef";
    const NEW: &str = "new-secret-fedcba9876543210";

    fn keys() -> SigningKeys {
        SigningKeys::new("k1", OLD).unwrap()
    }

    fn signed(keys: &SigningKeys) -> TestContext {
        let mut context = TestContext::new("orders.place_order", Duration::from_secs(60));
        context.signature = Some(keys.sign(&context));
        context
    }

    #[test]
    fn a_signed_context_verifies_and_arguments_are_not_signed() {
        let keys = keys();
        let context = signed(&keys).arguments(serde_json::json!("sell"));
        assert_eq!(keys.verify_at(&context, Utc::now()), Ok(()));
        let value = context.signature.as_deref().unwrap();
        assert!(value.starts_with("v1;kid=k1;sig="), "{value}");
    }

    #[test]
    fn the_signature_survives_the_wire_and_json() {
        let keys = keys();
        let context = signed(&keys);
        let map: std::collections::HashMap<_, _> = headers::encode(&context).into_iter().collect();
        assert_eq!(map.len(), 5);
        let back = headers::decode(|n| map.get(n).map(|v| v.as_bytes()))
            .unwrap()
            .unwrap();
        assert_eq!(back.signature, context.signature);
        assert_eq!(keys.verify(&back), Ok(()));
        let json: TestContext =
            serde_json::from_slice(&serde_json::to_vec(&context).unwrap()).unwrap();
        assert_eq!(keys.verify(&json), Ok(()));
    }

    #[test]
    fn unsigned_is_rejected() {
        let context = TestContext::new("c", Duration::from_secs(60));
        assert_eq!(keys().verify(&context).unwrap_err().reason(), "unsigned");
    }

    #[test]
    fn another_secret_is_forged() {
        let forger = SigningKeys::new("k1", "a-guessed-secret-123456").unwrap();
        let context = signed(&forger);
        let err = keys().verify(&context).unwrap_err();
        assert!(
            matches!(&err, ContextError::BadSignature { kid, .. } if kid == "k1"),
            "{err:?}"
        );
        assert_eq!(err.reason(), "bad_signature");
    }

    #[test]
    fn an_unknown_kid_is_rejected() {
        let other = SigningKeys::new("k9", OLD).unwrap();
        let err = keys().verify(&signed(&other)).unwrap_err();
        assert!(
            matches!(&err, ContextError::UnknownKey { kid, .. } if kid == "k9"),
            "{err:?}"
        );
    }

    #[test]
    fn a_changed_field_is_rejected() {
        let keys = keys();
        let base = signed(&keys);
        let mut id = base.clone();
        id.id.push('x');
        let mut case = base.clone();
        case.case = "payments.refund".into();
        let mut expiry = base.clone();
        expiry.expires_at += ChronoDuration::days(1);
        let mut issued = base.clone();
        issued.issued_at -= ChronoDuration::microseconds(1);
        for tampered in [id, case, expiry, issued] {
            assert_eq!(
                keys.verify(&tampered).unwrap_err().reason(),
                "bad_signature",
                "{tampered:?}"
            );
        }
    }

    /// A context with fixed fields, for signatures pinned by value.
    fn pinned(arguments: serde_json::Value) -> TestContext {
        let mut context = TestContext::with_id("test-1", "orders.place_order", Duration::ZERO)
            .arguments(arguments);
        context.issued_at = headers::parse_time("2020-05-01T12:30:00.123456Z").unwrap();
        context.expires_at = headers::parse_time("2020-05-01T13:30:00.123456Z").unwrap();
        context
    }

    #[test]
    fn signatures_are_pinned_and_null_arguments_sign_as_before() {
        // Computed outside Rust (Python's hmac): HMAC-SHA256 over each field prefixed by its
        // u64 big-endian length: version, kid, id, case, issue, expiry, and for v2 the
        // SHA-256 of `{"side":"sell"}`.
        assert_eq!(
            keys().sign(&pinned(serde_json::Value::Null)),
            "v1;kid=k1;sig=pE4vSGO-CMJq_kYmo9fhnxWT4WbwWH0XA05RNO5MIeo"
        );
        assert_eq!(
            keys().sign(&pinned(serde_json::json!({"side": "sell"}))),
            "v2;kid=k1;sig=YEsG-_GJTumNOGV2jXKm5n2Pw-GhIBHo99TTfohCeKU"
        );
    }

    #[test]
    fn signed_arguments_cannot_be_changed_added_or_removed() {
        let keys = keys();
        let mut context = fresh_with(serde_json::json!({"side": "sell", "qty": 2}));
        context.signature = Some(keys.sign(&context));
        assert!(context
            .signature
            .as_deref()
            .unwrap()
            .starts_with("v2;kid=k1;sig="));
        assert_eq!(keys.verify(&context), Ok(()));
        assert_eq!(keys.verify_carried_at(&context, Utc::now()), Ok(()));

        let changed = context
            .clone()
            .arguments(serde_json::json!({"side": "buy", "qty": 2}));
        let removed = context.clone().arguments(serde_json::Value::Null);
        let mut added = fresh_with(serde_json::Value::Null);
        added.signature = Some(keys.sign(&added));
        let added = added.arguments(serde_json::json!({"side": "buy"}));
        for tampered in [&changed, &removed] {
            let err = keys.verify_carried_at(tampered, Utc::now()).unwrap_err();
            assert!(
                matches!(&err, ContextError::BadSignature { kid, .. } if kid == "k1"),
                "{tampered:?}: {err:?}"
            );
        }
        // A v1 signature does not cover arguments (a service may set its own afterwards, in
        // the TestExecution record), but arguments next to it in headers were added on the way.
        assert_eq!(keys.verify(&added), Ok(()));
        let err = keys.verify_carried_at(&added, Utc::now()).unwrap_err();
        assert_eq!(
            err,
            ContextError::UnsignedArguments {
                id: added.id.clone(),
                kid: "k1".into()
            }
        );
        assert_eq!(err.reason(), "bad_signature");
        assert_eq!(
            err.to_string(),
            format!("test context {} carries arguments that its signature (key id \"k1\", made without arguments) does not cover: they were added after signing", added.id)
        );
    }

    #[test]
    fn signed_arguments_survive_the_wire_and_json_and_a_changed_header_is_rejected() {
        let keys = keys();
        let mut context =
            fresh_with(serde_json::json!({"side": "sell", "price": 0.1, "who": "Zo\u{eb}"}));
        context.signature = Some(keys.sign(&context));
        let mut map: std::collections::HashMap<_, _> =
            headers::encode(&context).into_iter().collect();
        assert_eq!(map.len(), 6);
        let decode = |map: &std::collections::HashMap<&'static str, String>| {
            headers::decode(|n| map.get(n).map(|v| v.as_bytes()))
                .unwrap()
                .unwrap()
        };
        let back = decode(&map);
        assert_eq!(back.arguments, context.arguments);
        assert_eq!(keys.verify_carried_at(&back, Utc::now()), Ok(()));
        let record: TestContext =
            serde_json::from_slice(&serde_json::to_vec(&back).unwrap()).unwrap();
        assert_eq!(keys.verify(&record), Ok(()));

        // Same value, other spelling (spaces, key order, escapes): the value is what is signed.
        map.insert(
            headers::TEST_ARGUMENTS,
            r#"{ "who": "Zoë", "side": "sell", "price": 1e-1 }"#.into(),
        );
        assert_eq!(keys.verify_carried_at(&decode(&map), Utc::now()), Ok(()));
        // Another value is tampering.
        map.insert(
            headers::TEST_ARGUMENTS,
            r#"{"price":0.1,"side":"buy","who":"Zo\u00eb"}"#.into(),
        );
        assert_eq!(
            keys.verify_carried_at(&decode(&map), Utc::now())
                .unwrap_err()
                .reason(),
            "bad_signature"
        );
        map.remove(headers::TEST_ARGUMENTS);
        assert_eq!(
            keys.verify_carried_at(&decode(&map), Utc::now())
                .unwrap_err()
                .reason(),
            "bad_signature"
        );
    }

    fn fresh_with(arguments: serde_json::Value) -> TestContext {
        TestContext::new("orders.place_order", Duration::from_secs(60)).arguments(arguments)
    }

    #[test]
    fn an_expired_context_is_rejected_by_verify_at_only() {
        let keys = keys();
        let mut context = TestContext::new("c", Duration::from_secs(1));
        context.issued_at -= ChronoDuration::hours(2);
        context.expires_at -= ChronoDuration::hours(2);
        context.signature = Some(keys.sign(&context));
        assert_eq!(keys.verify(&context), Ok(()));
        let err = keys.verify_at(&context, Utc::now()).unwrap_err();
        assert_eq!(err.reason(), "expired");
    }

    #[test]
    fn malformed_signature_values_are_rejected() {
        let keys = keys();
        let good = signed(&keys).signature.unwrap();
        let sig = good.rsplit_once("sig=").unwrap().1.to_owned();
        for bad in [
            "".to_owned(),
            "v2;kid=k1;sig=AAAA".to_owned(),
            format!("v1;sig={sig}"),
            "v1;kid=k1".to_owned(),
            "v1;kid=;sig=AAAA".to_owned(),
            "v1;kid=k1;sig=not base64!".to_owned(),
            "v1;kid=k1;sig=AAAA".to_owned(),
            format!("{good};extra=1"),
            format!("v1;kid=k1;sig={sig}="),
        ] {
            let mut context = signed(&keys);
            context.signature = Some(bad.clone());
            assert_eq!(
                keys.verify(&context).unwrap_err().reason(),
                "malformed_signature",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_bad_test_id_is_rejected_before_the_signature() {
        let keys = keys();
        let mut context = signed(&keys);
        context.id = "has space".into();
        assert_eq!(keys.verify(&context).unwrap_err().reason(), "bad_test_id");
    }

    #[test]
    fn rotation_accepts_old_and_new_until_the_old_is_removed() {
        let old = keys();
        let by_old = signed(&old);
        let both = SigningKeys::parse(&format!("k2:{NEW}, k1:{OLD}")).unwrap();
        assert_eq!(both.current_kid(), "k2");
        assert_eq!(both.kids().collect::<Vec<_>>(), ["k2", "k1"]);
        assert_eq!(both.verify(&by_old), Ok(()));
        let by_new = signed(&both);
        assert!(by_new.signature.as_deref().unwrap().contains("kid=k2"));
        assert_eq!(both.verify(&by_new), Ok(()));
        // Old verifiers that know the new key accept it too.
        let old_and_new = keys().accept_also("k2", NEW).unwrap();
        assert_eq!(old_and_new.verify(&by_new), Ok(()));
        let new_only = SigningKeys::parse(&format!("k2:{NEW}")).unwrap();
        assert_eq!(
            new_only.verify(&by_old).unwrap_err().reason(),
            "unknown_key"
        );
    }

    #[test]
    fn parse_errors_are_typed_and_never_show_a_secret() {
        let secret = "s3cr3t-s3cr3t-s3cr3t";
        let cases = [
            ("", KeysError::Empty),
            (" , ", KeysError::Empty),
            (secret, KeysError::MissingSeparator { index: 1 }),
            (
                &format!("k1:{secret},{secret}") as &str,
                KeysError::MissingSeparator { index: 2 },
            ),
            (
                &format!(":{secret}"),
                KeysError::BadKeyId {
                    index: 1,
                    why: "it is empty",
                },
            ),
            (
                &format!("k 1:{secret}"),
                KeysError::BadKeyId {
                    index: 1,
                    why: "it has a character that is not allowed",
                },
            ),
            (
                &format!("k1:{secret},k1:{secret}x"),
                KeysError::DuplicateKeyId { kid: "k1".into() },
            ),
            (
                "k1:short",
                KeysError::ShortSecret {
                    kid: "k1".into(),
                    len: 5,
                },
            ),
        ];
        for (spec, expected) in cases {
            let err = SigningKeys::parse(spec).unwrap_err();
            assert_eq!(err, expected, "{spec:?}");
            for shown in [err.to_string(), format!("{err:?}")] {
                assert!(!shown.contains(secret), "{shown}");
                assert!(!shown.contains("short"), "{shown}");
            }
        }
    }

    #[test]
    fn debug_redacts_secrets() {
        let keys = SigningKeys::parse(&format!("k2:{NEW},k1:{OLD}")).unwrap();
        let shown = format!("{keys:?} {keys:#?}");
        assert!(!shown.contains(NEW) && !shown.contains(OLD), "{shown}");
        assert!(
            shown.contains("k2") && shown.contains("redacted"),
            "{shown}"
        );
        let text: SecretString = format!("k1:{OLD}").parse().unwrap();
        let shown = format!("{text:?} {text} {:?}", Some(&text));
        assert!(!shown.contains(OLD), "{shown}");
        assert_eq!(
            SigningKeys::parse(text.expose()).unwrap().current_kid(),
            "k1"
        );
    }
}
