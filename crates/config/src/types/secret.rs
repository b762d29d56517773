use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

/// What a [`Secret`] shows instead of its value.
pub const REDACTED: &str = "<redacted>";

/// A secret string (API key, password) that never shows its value: `Debug`, `Display` and
/// `Serialize` all give [`REDACTED`], so logging a config or dumping it with
/// [`dump`](crate::dump) is safe. Read the value with [`expose`](Self::expose).
///
/// Deserializes from a plain string, typically `api_key: ${OPENAI_API_KEY}`.
///
/// ```
/// use quorum_config::Secret;
/// let key = Secret::new("sk-live-123");
/// assert_eq!(key.expose(), "sk-live-123");
/// assert_eq!(format!("{key} {key:?}"), "<redacted> Secret(<redacted>)");
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value itself. Take care where it goes.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string (often: the variable was set but empty).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl FromStr for Secret {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<Self, Infallible> {
        Ok(Self::new(s))
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shows_the_value() {
        let secret: Secret = "hunter2".parse().unwrap();
        assert_eq!(secret.expose(), "hunter2");
        assert!(!secret.is_empty());
        for shown in [
            format!("{secret}"),
            format!("{secret:?}"),
            format!("{secret:#?}"),
            serde_json::to_string(&secret).unwrap(),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains(REDACTED), "{shown}");
        }
    }

    #[test]
    fn deserializes_from_a_string() {
        let secret: Secret = serde_json::from_str(r#""sk-1""#).unwrap();
        assert_eq!(secret, Secret::new("sk-1"));
        assert!(serde_json::from_str::<Secret>("1").is_err());
    }
}
