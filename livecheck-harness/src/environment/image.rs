//! Container image references.

use std::fmt;

/// A container image reference, `name:tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    name: String,
    tag: String,
}

impl ImageRef {
    /// `name:tag`.
    pub fn new(name: impl Into<String>, tag: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            tag: tag.into(),
        }
    }

    /// Parses `name:tag` (`latest` when no tag is given; pin a tag in tests).
    pub fn parse(s: &str) -> Self {
        match s.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => Self::new(name, tag),
            _ => Self::new(s, "latest"),
        }
    }

    /// The name (`apache/kafka`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tag (`3.9.1`).
    pub fn tag(&self) -> &str {
        &self.tag
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_without_a_tag_is_latest_and_a_registry_port_is_not_a_tag() {
        assert_eq!(ImageRef::parse("apache/kafka:3.9.1").tag(), "3.9.1");
        assert_eq!(
            ImageRef::parse("apache/kafka").to_string(),
            "apache/kafka:latest"
        );
        let local = ImageRef::parse("localhost:5000/kafka");
        assert_eq!(
            (local.name(), local.tag()),
            ("localhost:5000/kafka", "latest")
        );
    }
}
