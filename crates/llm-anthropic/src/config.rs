//! The typed configuration section of an Anthropic provider.

use std::collections::BTreeMap;

use quorum_config::Secret;
pub use quorum_llm::http_client::TimeoutConfig;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use url::Url;

/// The base URL used when the section has none.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";

/// The `anthropic-version` header sent when the section sets none.
pub const DEFAULT_VERSION: &str = "2023-06-01";

/// The `max_tokens` sent when a request sets none (the Messages API requires one).
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

/// Configuration of one Anthropic endpoint.
///
/// ```yaml
/// api_key: ${ANTHROPIC_API_KEY}
/// base_url: https://api.anthropic.com   # the default; /v1/messages is appended
/// version: "2023-06-01"                  # the anthropic-version header (default)
/// beta: [prompt-caching-2024-07-31]      # anthropic-beta features, if any
/// default_max_tokens: 1024
/// timeout: { connect: 5s, request: 10m }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnthropicConfig {
    /// The API root without the version path; `v1/messages` and `v1/models` are appended. Must
    /// be `http` or `https`. `None`: [`DEFAULT_BASE_URL`].
    #[serde(
        default,
        deserialize_with = "deserialize_base_url",
        serialize_with = "quorum_llm::http_client::serialize_optional_url",
        skip_serializing_if = "Option::is_none"
    )]
    pub base_url: Option<Url>,
    /// The API key, sent as `x-api-key` (Anthropic answers 401 without one; a gateway that adds
    /// it may leave it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
    /// The `anthropic-version` header. Default [`DEFAULT_VERSION`].
    #[serde(default = "default_version", deserialize_with = "deserialize_version")]
    pub version: String,
    /// Beta features, sent comma-separated as `anthropic-beta`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub beta: Vec<String>,
    /// The `max_tokens` of requests that set none (at least 1). Default [`DEFAULT_MAX_TOKENS`].
    #[serde(
        default = "default_max_tokens",
        deserialize_with = "deserialize_max_tokens"
    )]
    pub default_max_tokens: u32,
    /// Extra headers sent with every request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Connect, request and read timeouts.
    #[serde(default)]
    pub timeout: TimeoutConfig,
}

impl Default for AnthropicConfig {
    fn default() -> Self {
        AnthropicConfig {
            base_url: None,
            api_key: None,
            version: default_version(),
            beta: Vec::new(),
            default_max_tokens: DEFAULT_MAX_TOKENS,
            headers: BTreeMap::new(),
            timeout: TimeoutConfig::default(),
        }
    }
}

impl AnthropicConfig {
    /// A config for `base_url` with every other field at its default.
    ///
    /// # Errors
    ///
    /// A message naming the URL when it does not parse or is not `http`/`https`.
    pub fn new(base_url: &str) -> Result<Self, String> {
        Ok(AnthropicConfig {
            base_url: Some(parse_base_url(base_url)?),
            ..AnthropicConfig::default()
        })
    }

    /// The base URL as text: the configured one or [`DEFAULT_BASE_URL`].
    #[must_use]
    pub fn base_url_str(&self) -> &str {
        self.base_url.as_ref().map_or(DEFAULT_BASE_URL, Url::as_str)
    }
}

fn default_version() -> String {
    DEFAULT_VERSION.to_owned()
}

fn default_max_tokens() -> u32 {
    DEFAULT_MAX_TOKENS
}

fn deserialize_version<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let text = String::deserialize(deserializer)?;
    let valid = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    if valid {
        Ok(text)
    } else {
        Err(de::Error::custom(format!(
            "invalid version {text:?}: expected a date such as \"{DEFAULT_VERSION}\""
        )))
    }
}

fn deserialize_max_tokens<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let value = u32::deserialize(deserializer)?;
    if value == 0 {
        return Err(de::Error::custom("invalid value 0: must be at least 1"));
    }
    Ok(value)
}

/// The shared base-URL checks, plus: the API root, without `/v1` (this crate appends it).
pub(crate) fn parse_base_url(text: &str) -> Result<Url, String> {
    let url = quorum_llm::http_client::parse_base_url(text).map_err(|e| e.to_string())?;
    if url.path().trim_end_matches('/').ends_with("/v1") {
        return Err(format!(
            "invalid URL {text:?}: give the API root without /v1 (e.g. {DEFAULT_BASE_URL})"
        ));
    }
    Ok(url)
}

fn deserialize_base_url<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Url>, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_base_url(&text).map(Some).map_err(de::Error::custom)
}

#[cfg(test)]
mod tests {
    use quorum_config::Duration;

    use super::*;

    fn parse(value: serde_json::Value) -> Result<AnthropicConfig, String> {
        quorum_llm::parse_config::<AnthropicConfig>("p", value).map_err(|e| e.to_string())
    }

    #[test]
    fn empty_section_gives_the_defaults() {
        let cfg = parse(serde_json::json!({})).unwrap();
        assert_eq!(cfg, AnthropicConfig::default());
        assert_eq!(cfg.base_url_str(), "https://api.anthropic.com");
        assert_eq!(cfg.version, "2023-06-01");
        assert_eq!(cfg.default_max_tokens, 1024);
        assert!(cfg.api_key.is_none() && cfg.beta.is_empty());
    }

    #[test]
    fn full_config_parses() {
        let cfg = parse(serde_json::json!({
            "base_url": "https://gateway.example.com/anthropic",
            "api_key": "sk-ant-1",
            "version": "2024-01-01",
            "beta": ["prompt-caching-2024-07-31"],
            "default_max_tokens": 4096,
            "headers": {"x-team": "core"},
            "timeout": {"connect": "2s", "request": "1m", "read": "30s"}
        }))
        .unwrap();
        assert_eq!(cfg.base_url_str(), "https://gateway.example.com/anthropic");
        assert_eq!(cfg.api_key.as_ref().map(Secret::expose), Some("sk-ant-1"));
        assert_eq!(cfg.version, "2024-01-01");
        assert_eq!(cfg.default_max_tokens, 4096);
        assert_eq!(cfg.timeout.read, Some(Duration::from_secs(30)));
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases = [
            (
                serde_json::json!({"base_url": "ftp://x"}),
                "base_url: invalid URL \"ftp://x\": scheme \"ftp\" is not http or https",
            ),
            (
                serde_json::json!({"base_url": "https://api.anthropic.com/v1"}),
                "base_url: invalid URL \"https://api.anthropic.com/v1\": give the API root without /v1 (e.g. https://api.anthropic.com)",
            ),
            (
                serde_json::json!({"version": "latest"}),
                "version: invalid version \"latest\": expected a date such as \"2023-06-01\"",
            ),
            (
                serde_json::json!({"default_max_tokens": 0}),
                "default_max_tokens: invalid value 0: must be at least 1",
            ),
            (
                serde_json::json!({"default_max_tokens": -5}),
                "default_max_tokens: invalid value: integer `-5`",
            ),
            (
                serde_json::json!({"timeout": {"request": "10"}}),
                "timeout.request: ",
            ),
            (serde_json::json!({"apikey": "x"}), "unknown field `apikey`"),
        ];
        for (value, want) in cases {
            let err = parse(value).unwrap_err();
            assert!(
                err.starts_with("invalid config for provider \"p\": "),
                "{err}"
            );
            assert!(err.contains(want), "{err:?} does not contain {want:?}");
        }
    }

    #[test]
    fn secrets_are_redacted() {
        let cfg = parse(serde_json::json!({"api_key": "sk-ant-secret"})).unwrap();
        assert!(!format!("{cfg:?}").contains("sk-ant-secret"));
        assert!(
            !serde_json::to_string(&cfg)
                .unwrap()
                .contains("sk-ant-secret")
        );
    }
}
