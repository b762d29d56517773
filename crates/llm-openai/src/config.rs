//! The typed configuration section of an OpenAI-compatible provider.

use std::collections::BTreeMap;

use quorum_config::Secret;
pub use quorum_llm::http_client::TimeoutConfig;
use serde::{Deserialize, Deserializer, Serialize};
use url::Url;

/// Configuration of one OpenAI-compatible endpoint.
///
/// ```yaml
/// base_url: https://openrouter.ai/api/v1   # up to and including /v1
/// api_key: ${OPENROUTER_API_KEY}            # optional for local servers
/// timeout: { connect: 5s, request: 10m }
/// openrouter: { referer: https://example.com, title: Quorum }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    /// The API root including the version path (`https://api.openai.com/v1`,
    /// `http://localhost:11434/v1`); `chat/completions`, `models`... are appended. Must be
    /// `http` or `https`.
    #[serde(
        deserialize_with = "deserialize_base_url",
        serialize_with = "quorum_llm::http_client::serialize_url"
    )]
    pub base_url: Url,
    /// The API key, sent as `Authorization: Bearer`; omit for local servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
    /// OpenAI organization id (`OpenAI-Organization` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// OpenAI project id (`OpenAI-Project` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Extra headers sent with every request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Connect, request and read timeouts.
    #[serde(default)]
    pub timeout: TimeoutConfig,
    /// OpenRouter's optional attribution headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openrouter: Option<OpenRouterConfig>,
    /// Ask for usage in streams (`stream_options.include_usage`); turn off for servers that
    /// reject `stream_options`. Default `true`.
    #[serde(default = "yes")]
    pub stream_usage: bool,
}

fn yes() -> bool {
    true
}

impl OpenAiConfig {
    /// A config for `base_url` with every other field at its default.
    ///
    /// # Errors
    ///
    /// A message naming the URL when it does not parse or is not `http`/`https`.
    pub fn new(base_url: &str) -> Result<Self, String> {
        Ok(OpenAiConfig {
            base_url: parse_base_url(base_url)?,
            api_key: None,
            organization: None,
            project: None,
            headers: BTreeMap::new(),
            timeout: TimeoutConfig::default(),
            openrouter: None,
            stream_usage: true,
        })
    }
}

/// OpenRouter app attribution (`HTTP-Referer`, `X-Title`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenRouterConfig {
    /// Your site's URL, sent as `HTTP-Referer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referer: Option<String>,
    /// Your app's name, sent as `X-Title`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// The shared base-URL checks (`http`/`https`, a host, no query or fragment); the path is free
/// (`/v1`, `/api/v1`...).
pub(crate) fn parse_base_url(text: &str) -> Result<Url, String> {
    quorum_llm::http_client::parse_base_url(text).map_err(|e| e.to_string())
}

fn deserialize_base_url<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Url, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_base_url(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use quorum_config::Duration;

    use super::*;

    fn parse(value: serde_json::Value) -> Result<OpenAiConfig, String> {
        quorum_llm::parse_config::<OpenAiConfig>("p", value).map_err(|e| e.to_string())
    }

    #[test]
    fn full_config_parses() {
        let cfg = parse(serde_json::json!({
            "base_url": "https://openrouter.ai/api/v1",
            "api_key": "sk-or-1",
            "headers": {"x-team": "core"},
            "timeout": {"connect": "2s", "request": "1m", "read": "30s"},
            "openrouter": {"referer": "https://example.com", "title": "Quorum"},
            "stream_usage": false
        }))
        .unwrap();
        assert_eq!(cfg.base_url.as_str(), "https://openrouter.ai/api/v1");
        assert_eq!(cfg.api_key.as_ref().map(Secret::expose), Some("sk-or-1"));
        assert_eq!(cfg.timeout.connect, Duration::from_secs(2));
        assert_eq!(cfg.timeout.request, Duration::from_secs(60));
        assert_eq!(cfg.timeout.read, Some(Duration::from_secs(30)));
        assert_eq!(cfg.openrouter.unwrap().title.as_deref(), Some("Quorum"));
        assert!(!cfg.stream_usage);
    }

    #[test]
    fn defaults_apply() {
        let cfg = parse(serde_json::json!({"base_url": "http://localhost:11434/v1"})).unwrap();
        assert_eq!(cfg, OpenAiConfig::new("http://localhost:11434/v1").unwrap());
        assert_eq!(cfg.timeout, TimeoutConfig::default());
        assert!(cfg.stream_usage);
        assert!(cfg.api_key.is_none());
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases = [
            (
                serde_json::json!({"base_url": "htp:/x"}),
                "base_url: invalid URL \"htp:/x\": scheme \"htp\" is not http or https",
            ),
            (
                serde_json::json!({"base_url": "not a url"}),
                "base_url: invalid URL \"not a url\": relative URL without a base",
            ),
            (
                serde_json::json!({"base_url": "http://h/v1?x=1"}),
                "base_url: invalid URL \"http://h/v1?x=1\": a base URL takes no query or fragment",
            ),
            (
                serde_json::json!({"base_url": "http://h", "timeout": {"connect": "30"}}),
                "timeout.connect: ",
            ),
            (
                serde_json::json!({"base_url": "http://h", "timeout": {"conect": "3s"}}),
                "timeout.conect: unknown field `conect`",
            ),
            (
                serde_json::json!({"base_url": "http://h", "apikey": "x"}),
                "unknown field `apikey`",
            ),
            (serde_json::json!({}), "missing field `base_url`"),
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
    fn secrets_are_redacted_in_debug() {
        let cfg =
            parse(serde_json::json!({"base_url": "http://h", "api_key": "sk-secret"})).unwrap();
        assert!(!format!("{cfg:?}").contains("sk-secret"));
    }
}
