//! The typed configuration section of an Ollama provider.

use std::collections::BTreeMap;
use std::fmt;

use quorum_config::{Duration, Secret};
pub use quorum_llm::http_client::TimeoutConfig;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::Url;

/// The base URL used when the section has none: a local Ollama server.
pub const DEFAULT_BASE_URL: &str = "http://localhost:11434";

/// Configuration of one Ollama server.
///
/// ```yaml
/// base_url: http://gpu-box:11434      # the server root (default http://localhost:11434)
/// keep_alive: 30m                     # or "forever"; unset: the server's default (5m)
/// generate_models: ["*-base", "starcoder*"]   # models that use /api/generate
/// timeout: { connect: 2s, request: 10m }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OllamaConfig {
    /// The server root; `api/chat`, `api/tags`... are appended. Must be `http` or `https`, and
    /// not the OpenAI-compatible `/v1` path. `None`: [`DEFAULT_BASE_URL`].
    #[serde(
        default,
        deserialize_with = "deserialize_base_url",
        serialize_with = "quorum_llm::http_client::serialize_optional_url",
        skip_serializing_if = "Option::is_none"
    )]
    pub base_url: Option<Url>,
    /// A bearer token, for an Ollama behind an authenticating proxy (or ollama.com); omit for a
    /// local server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
    /// Extra headers sent with every request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Connect, request and read timeouts.
    #[serde(default)]
    pub timeout: TimeoutConfig,
    /// How long the server keeps a model loaded after a request (`keep_alive`), unless the
    /// request's `extra` says otherwise. Unset: the server's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<KeepAlive>,
    /// Models called through the legacy `/api/generate` (prompt + system) instead of
    /// `/api/chat`: exact names or patterns where `*` matches any run of characters
    /// (`"*-base"`, `"codellama:*-code"`). A request overrides the choice with
    /// `extra: {"endpoint": "chat" | "generate"}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generate_models: Vec<ModelPattern>,
}

impl OllamaConfig {
    /// A config for `base_url` with every other field at its default.
    ///
    /// # Errors
    ///
    /// A message naming the URL when it does not parse, is not `http`/`https`, or is the
    /// OpenAI-compatible `/v1` path.
    pub fn new(base_url: &str) -> Result<Self, String> {
        Ok(OllamaConfig {
            base_url: Some(parse_base_url(base_url)?),
            ..OllamaConfig::default()
        })
    }

    /// The base URL as text: the configured one or [`DEFAULT_BASE_URL`].
    #[must_use]
    pub fn base_url_str(&self) -> &str {
        self.base_url.as_ref().map_or(DEFAULT_BASE_URL, Url::as_str)
    }

    /// Whether `model` is configured to use `/api/generate`.
    #[must_use]
    pub fn uses_generate(&self, model: &str) -> bool {
        self.generate_models.iter().any(|p| p.matches(model))
    }
}

/// How long Ollama keeps a model in memory after a request: a duration (`"30m"`, `"0s"` =
/// unload right away) or `"forever"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// Keep it loaded this long.
    For(Duration),
    /// Never unload it.
    Forever,
}

impl KeepAlive {
    /// The wire value: whole seconds as a number, other durations as Go duration text
    /// (`"1500ms"`), `-1` for forever.
    #[must_use]
    pub fn to_wire(self) -> serde_json::Value {
        match self {
            KeepAlive::Forever => serde_json::Value::from(-1),
            KeepAlive::For(d) => {
                let d = d.as_std();
                if d.subsec_nanos() == 0 {
                    serde_json::Value::from(d.as_secs())
                } else {
                    serde_json::Value::from(format!("{}ms", d.as_millis().max(1)))
                }
            }
        }
    }
}

impl fmt::Display for KeepAlive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepAlive::For(d) => write!(f, "{d}"),
            KeepAlive::Forever => f.write_str("forever"),
        }
    }
}

impl Serialize for KeepAlive {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeepAlive {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeepAliveVisitor;

        impl Visitor<'_> for KeepAliveVisitor {
            type Value = KeepAlive;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"30m\" or \"0s\", or \"forever\"")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<KeepAlive, E> {
                if text.trim().eq_ignore_ascii_case("forever") {
                    return Ok(KeepAlive::Forever);
                }
                text.parse::<Duration>()
                    .map(KeepAlive::For)
                    .map_err(|e| E::custom(format!("{e}, or \"forever\"")))
            }
        }

        deserializer.deserialize_str(KeepAliveVisitor)
    }
}

/// A model name pattern: `*` matches any run of characters (including none); everything else
/// matches itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelPattern(String);

impl ModelPattern {
    /// A pattern from its text.
    ///
    /// # Errors
    ///
    /// A message when the pattern is empty.
    pub fn new(pattern: impl Into<String>) -> Result<Self, String> {
        let pattern = pattern.into();
        if pattern.trim().is_empty() {
            return Err("invalid model pattern \"\": empty".to_owned());
        }
        Ok(ModelPattern(pattern))
    }

    /// The pattern text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `model` matches the whole pattern.
    #[must_use]
    pub fn matches(&self, model: &str) -> bool {
        glob_match(self.0.as_bytes(), model.as_bytes())
    }
}

impl Serialize for ModelPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ModelPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ModelPattern::new(text).map_err(de::Error::custom)
    }
}

/// `*`-only glob matching with backtracking to the last star (linear in practice).
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// The shared base-URL checks, plus: the server root, not its `/v1` (OpenAI-compatible) or
/// `/api` path.
pub(crate) fn parse_base_url(text: &str) -> Result<Url, String> {
    let url = quorum_llm::http_client::parse_base_url(text).map_err(|e| e.to_string())?;
    let path = url.path().trim_end_matches('/');
    if path.ends_with("/v1") || path.ends_with("/api") {
        return Err(format!(
            "invalid URL {text:?}: give the server root (e.g. {DEFAULT_BASE_URL}), not its {} path",
            if path.ends_with("/v1") { "/v1" } else { "/api" }
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
    use super::*;

    fn parse(value: serde_json::Value) -> Result<OllamaConfig, String> {
        quorum_llm::parse_config::<OllamaConfig>("p", value).map_err(|e| e.to_string())
    }

    #[test]
    fn empty_section_gives_the_local_default() {
        let cfg = parse(serde_json::json!({})).unwrap();
        assert_eq!(cfg, OllamaConfig::default());
        assert_eq!(cfg.base_url_str(), "http://localhost:11434");
        assert_eq!(cfg.timeout.request, Duration::from_secs(600));
        assert!(cfg.keep_alive.is_none() && cfg.api_key.is_none());
    }

    #[test]
    fn full_config_parses() {
        let cfg = parse(serde_json::json!({
            "base_url": "https://ollama.example.com/proxy",
            "api_key": "tok",
            "headers": {"x-team": "core"},
            "timeout": {"connect": "2s", "request": "1m", "read": "30s"},
            "keep_alive": "30m",
            "generate_models": ["*-base", "exact:1b"]
        }))
        .unwrap();
        assert_eq!(cfg.base_url_str(), "https://ollama.example.com/proxy");
        assert_eq!(cfg.api_key.as_ref().map(Secret::expose), Some("tok"));
        assert_eq!(cfg.timeout.read, Some(Duration::from_secs(30)));
        assert_eq!(
            cfg.keep_alive,
            Some(KeepAlive::For(Duration::from_secs(1800)))
        );
        assert!(cfg.uses_generate("llama3-base"));
        assert!(cfg.uses_generate("exact:1b"));
        assert!(!cfg.uses_generate("exact:1b-instruct"));
        assert!(!cfg.uses_generate("llama3"));
        let forever = parse(serde_json::json!({"keep_alive": "forever"})).unwrap();
        assert_eq!(forever.keep_alive, Some(KeepAlive::Forever));
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases = [
            (
                serde_json::json!({"base_url": "htp:/x"}),
                "base_url: invalid URL \"htp:/x\": scheme \"htp\" is not http or https",
            ),
            (
                serde_json::json!({"base_url": "http://localhost:11434/v1"}),
                "base_url: invalid URL \"http://localhost:11434/v1\": give the server root (e.g. http://localhost:11434), not its /v1 path",
            ),
            (
                serde_json::json!({"base_url": "http://h:1/api/"}),
                "not its /api path",
            ),
            (
                serde_json::json!({"base_url": "http://h/?x=1"}),
                "a base URL takes no query or fragment",
            ),
            (
                serde_json::json!({"keep_alive": "soon"}),
                "keep_alive: invalid duration \"soon\"",
            ),
            (
                serde_json::json!({"keep_alive": -1}),
                "keep_alive: invalid type: integer `-1`, expected a duration such as \"30m\" or \"0s\", or \"forever\"",
            ),
            (
                serde_json::json!({"generate_models": ["ok", ""]}),
                "generate_models[1]: invalid model pattern \"\": empty",
            ),
            (
                serde_json::json!({"timeout": {"conect": "3s"}}),
                "timeout.conect: unknown field `conect`",
            ),
            (serde_json::json!({"model": "x"}), "unknown field `model`"),
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
    fn keep_alive_wire_values() {
        assert_eq!(KeepAlive::Forever.to_wire(), serde_json::json!(-1));
        assert_eq!(
            KeepAlive::For(Duration::from_secs(300)).to_wire(),
            serde_json::json!(300)
        );
        assert_eq!(
            KeepAlive::For(Duration::from_secs(0)).to_wire(),
            serde_json::json!(0)
        );
        assert_eq!(
            KeepAlive::For(Duration::from_millis(1500)).to_wire(),
            serde_json::json!("1500ms")
        );
        let json = serde_json::to_value(KeepAlive::For(Duration::from_secs(90))).unwrap();
        assert_eq!(json, serde_json::json!("1m30s"));
        assert_eq!(
            serde_json::to_value(KeepAlive::Forever).unwrap(),
            serde_json::json!("forever")
        );
    }

    #[test]
    fn globs_match_whole_names() {
        let cases = [
            ("*", "anything", true),
            ("*", "", true),
            ("a*c", "abc", true),
            ("a*c", "ac", true),
            ("a*c", "abcd", false),
            ("*-base", "llama-base", true),
            ("*-base", "llama-base-2", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXcYb", false),
            ("llama3", "llama3", true),
            ("llama3", "llama3:8b", false),
            ("**x", "x", true),
        ];
        for (pattern, text, want) in cases {
            let p = ModelPattern::new(pattern).unwrap();
            assert_eq!(p.matches(text), want, "{pattern} vs {text}");
        }
        assert!(ModelPattern::new("  ").is_err());
    }

    #[test]
    fn secrets_are_redacted() {
        let cfg = parse(serde_json::json!({"api_key": "sk-secret"})).unwrap();
        assert!(!format!("{cfg:?}").contains("sk-secret"));
        assert!(!serde_json::to_string(&cfg).unwrap().contains("sk-secret"));
    }
}
