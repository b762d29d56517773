//! The advisor's configuration: one YAML document, every key optional.
//!
//! ```yaml
//! server:
//!   bind: 127.0.0.1:8080
//!   body_limit: 1MiB
//!   max_streams: 10000        # open SSE streams; past it: 503 with Retry-After
//!   stream_lifetime: 1h       # an SSE stream is closed (with a final event) after this
//!   heartbeat: 15s            # SSE comment lines while nothing else is sent
//!   max_wait: 60s             # the longest `wait` a POST /v1/advise may ask for
//!   shutdown_grace: 30s       # on SIGTERM: how long running jobs may still finish
//!   threads: 1                # 1 = one event loop (least CPU); N workers; 0 = one per core
//! store:
//!   url: sqlite://quorum-advisor.db   # or postgres://user@host/db
//! providers:
//!   - {name: ollama, kind: ollama, base_url: "http://localhost:11434"}
//!   - {name: openai, kind: openai, base_url: "https://api.openai.com/v1", api_key: "${OPENAI_API_KEY}"}
//! models:
//!   "gemma3:1b": {provider: ollama, fallbacks: ["llama3.2:1b"]}
//!   gpt: {provider: openai, model: gpt-4o-mini, system_prompt: "Be brief.", max_tokens: 512}
//! advisor:
//!   default_models: ["gemma3:1b", "llama3.2:1b", "deepseek-r1:1.5b"]
//!   max_models: 10
//! engine:
//!   max_concurrent_jobs: 5    # 1-100
//!   queue_capacity: 1000      # pending jobs; past it: 503
//!   job_timeout: 5m
//! resilience:                 # every model call, gateway and jobs alike
//!   retry: {max_attempts: 3, initial_delay: 100ms, max_delay: 5s, multiplier: 2}
//!   timeout: 120s             # per attempt
//! ```
//!
//! A provider entry is `name`, `kind` and an optional `resilience` override; every other key is
//! the provider kind's own section (see each provider crate), checked when the providers are
//! built — which [`crate::check`] does, without any network call.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use quorum_config::{ByteSize, Duration, Loader, ProcessEnv};
use quorum_llm::ResilienceConfig;
use quorum_store::StoreConfig;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ConfigIssue;

/// The models asked when a request names none (the original advisor's Ollama set).
pub const DEFAULT_MODELS: [&str; 3] = ["gemma3:1b", "llama3.2:1b", "deepseek-r1:1.5b"];

/// The system prompt used when neither the request nor the model's configuration gives one.
pub const BUILT_IN_SYSTEM_PROMPT: &str = "You are one of several expert advisors answering the \
same question independently. Give your best answer: accurate, direct and concise; say so when \
you are unsure.";

/// The whole configuration (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdvisorConfig {
    /// The HTTP server.
    pub server: ServerConfig,
    /// The database.
    pub store: StoreSection,
    /// Provider instances.
    pub providers: Vec<ProviderEntry>,
    /// Model names clients use, each mapped to a provider and its model id.
    pub models: BTreeMap<String, ModelEntry>,
    /// Advisor request defaults and bounds.
    pub advisor: AdvisorSection,
    /// The job engine.
    pub engine: EngineConfig,
    /// Retries, breakers, limits and timeouts of every provider (a provider entry may replace
    /// it with its own `resilience`).
    pub resilience: ResilienceConfig,
}

impl Default for AdvisorConfig {
    fn default() -> Self {
        AdvisorConfig {
            server: ServerConfig::default(),
            store: StoreSection::default(),
            providers: vec![ProviderEntry {
                name: "ollama".to_owned(),
                kind: "ollama".to_owned(),
                resilience: None,
                settings: [(
                    "base_url".to_owned(),
                    Value::String("http://localhost:11434".to_owned()),
                )]
                .into_iter()
                .collect(),
            }],
            models: DEFAULT_MODELS
                .iter()
                .map(|m| {
                    (
                        (*m).to_owned(),
                        ModelEntry {
                            provider: "ollama".to_owned(),
                            ..ModelEntry::default()
                        },
                    )
                })
                .collect(),
            advisor: AdvisorSection::default(),
            engine: EngineConfig::default(),
            resilience: ResilienceConfig::default(),
        }
    }
}

/// `server`: the HTTP listener and its limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Listening address. Default `127.0.0.1:8080`.
    pub bind: SocketAddr,
    /// The largest request body; past it: 413. Default 1 MiB.
    pub body_limit: ByteSize,
    /// Open SSE streams allowed at once; past it: 503 with `Retry-After`. Default 10000.
    pub max_streams: usize,
    /// The longest an SSE stream stays open; it then ends with a final `error` event of type
    /// `stream_expired` (reconnect with `Last-Event-ID`). Default 1h.
    pub stream_lifetime: Duration,
    /// SSE keep-alive comment interval. Default 15s.
    pub heartbeat: Duration,
    /// The longest `wait` a `POST /v1/advise` may ask for. Default 60s.
    pub max_wait: Duration,
    /// On SIGTERM / SIGINT, how long running jobs may still finish before they are released
    /// for the next start. Default 30s.
    pub shutdown_grace: Duration,
    /// Threads running the server. `1` (the default) is a single-threaded event loop: the
    /// least CPU per request and the lowest latency while one core keeps up (several
    /// thousand gateway requests/s, see docs/PERFORMANCE.md). More is a work-stealing
    /// runtime with that many workers, for more load than one core serves; `0` is one per
    /// CPU core. At most 256.
    pub threads: usize,
}

impl ServerConfig {
    /// The threads to run: `threads`, or one per CPU core when it is 0.
    #[must_use]
    pub fn threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            n => n,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            body_limit: ByteSize::new(1024 * 1024),
            max_streams: 10_000,
            stream_lifetime: Duration::from_secs(3600),
            heartbeat: Duration::from_secs(15),
            max_wait: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
            threads: 1,
        }
    }
}

/// `store`: where jobs, progress and results are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// `sqlite://FILE` (created if missing) or `postgres://…`. Default
    /// `sqlite://quorum-advisor.db` in the working directory.
    pub url: String,
    /// Pool, schema, compression and retention settings.
    #[serde(flatten)]
    pub config: StoreConfig,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            url: "sqlite://quorum-advisor.db".to_owned(),
            config: StoreConfig::default(),
        }
    }
}

/// One provider instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderEntry {
    /// The name models refer to.
    pub name: String,
    /// The provider kind (`openai`, `ollama`, `anthropic`).
    pub kind: String,
    /// Replaces the top-level `resilience` for this provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resilience: Option<ResilienceConfig>,
    /// The kind's own settings (`base_url`, `api_key`, `timeout`, …).
    #[serde(flatten)]
    pub settings: serde_json::Map<String, Value>,
}

/// One model clients may ask for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelEntry {
    /// The provider instance that serves it.
    pub provider: String,
    /// The provider's model id; default: the model's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The system prompt for this model (a request's own prompts take precedence).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// Other configured model names tried in order when this one fails.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<String>,
    /// The context window in tokens, if known (lets the router skip to a larger model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u64>,
    /// `max_tokens` for advisor jobs when the request sets none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// The sampling temperature for advisor jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
}

impl ModelEntry {
    /// The provider's id of this model, named `name` in the configuration.
    #[must_use]
    pub fn model_id<'a>(&'a self, name: &'a str) -> &'a str {
        self.model.as_deref().unwrap_or(name)
    }
}

/// `advisor`: request defaults and bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdvisorSection {
    /// Models asked when a request names none. Default the three Ollama models.
    pub default_models: Vec<String>,
    /// The most models one request may ask. Default 10.
    pub max_models: usize,
    /// The longest question, in characters. Default 100000.
    pub max_question_chars: usize,
    /// The system prompt when neither request nor model gives one.
    pub system_prompt: String,
    /// Whether model answers are streamed, so SSE clients see tokens as they come. Default true.
    pub stream_tokens: bool,
}

impl Default for AdvisorSection {
    fn default() -> Self {
        AdvisorSection {
            default_models: DEFAULT_MODELS.iter().map(|m| (*m).to_owned()).collect(),
            max_models: 10,
            max_question_chars: 100_000,
            system_prompt: BUILT_IN_SYSTEM_PROMPT.to_owned(),
            stream_tokens: true,
        }
    }
}

/// `engine`: the job pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Jobs running at once (1–100). Default 5.
    pub max_concurrent_jobs: u32,
    /// Jobs allowed to wait; a submission past it gets 503. Default 1000.
    pub queue_capacity: u32,
    /// The longest a job may take from submission; it then ends `timed_out`. Default 5m.
    pub job_timeout: Duration,
    /// How long a claim on a running job holds without renewal (renewed every third of it).
    /// Default 30s.
    pub lease: Duration,
    /// This instance's runner id. Jobs it left running when it crashed are taken back at its
    /// next start; give each instance sharing a database its own. Default `advisor`.
    pub node_id: String,
    /// How often the pool looks for pending jobs when nothing woke it. Default 1s.
    pub poll_interval: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_concurrent_jobs: 5,
            queue_capacity: 1000,
            job_timeout: Duration::from_secs(300),
            lease: Duration::from_secs(30),
            node_id: "advisor".to_owned(),
            poll_interval: Duration::from_secs(1),
        }
    }
}

impl AdvisorConfig {
    /// Loads the configuration: defaults, then `file` (if any), then `QUORUM__…` environment
    /// variables, then `--set` overrides.
    ///
    /// # Errors
    ///
    /// A one-line [`quorum_config::ConfigError`] naming the key and where its value came from.
    pub fn load(
        file: Option<&str>,
        overrides: &[String],
    ) -> Result<AdvisorConfig, quorum_config::ConfigError> {
        let mut loader = Loader::new();
        if let Some(path) = file {
            loader = loader.file(path);
        }
        loader
            .env(ProcessEnv, "QUORUM")
            .overrides(overrides)?
            .load()
    }

    /// Checks everything that can be checked without a network call; every problem found,
    /// each naming its key.
    #[must_use]
    pub fn problems(&self) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        let mut bad = |field: String, message: String| out.push(ConfigIssue { field, message });
        let s = &self.server;
        if s.body_limit.bytes() < 1024 {
            bad(
                "server.body_limit".into(),
                format!("{} is below the 1KiB minimum", s.body_limit),
            );
        }
        if s.max_streams == 0 {
            bad("server.max_streams".into(), "must be at least 1".into());
        }
        if s.threads > 256 {
            bad(
                "server.threads".into(),
                format!(
                    "{} is above the maximum of 256 (0 = one per CPU core)",
                    s.threads
                ),
            );
        }
        for (field, d) in [
            ("server.stream_lifetime", s.stream_lifetime),
            ("server.heartbeat", s.heartbeat),
            ("engine.job_timeout", self.engine.job_timeout),
            ("engine.lease", self.engine.lease),
            ("engine.poll_interval", self.engine.poll_interval),
        ] {
            if d.as_std().is_zero() {
                bad(field.into(), "must be more than 0s".into());
            }
        }
        let e = &self.engine;
        if !(1..=100).contains(&e.max_concurrent_jobs) {
            bad(
                "engine.max_concurrent_jobs".into(),
                format!("{} is outside 1..=100", e.max_concurrent_jobs),
            );
        }
        if e.queue_capacity == 0 {
            bad("engine.queue_capacity".into(), "must be at least 1".into());
        }
        if e.node_id.is_empty() || e.node_id.len() > 100 {
            bad(
                "engine.node_id".into(),
                "must be 1 to 100 characters".into(),
            );
        }
        if self.store.url.is_empty() {
            bad("store.url".into(), "must not be empty".into());
        }
        if let Err(err) = self.store.config.validate() {
            bad("store".into(), err.to_string());
        }
        if let Err(err) = self.resilience.validate() {
            bad("resilience".into(), err.to_string());
        }
        let mut names = BTreeSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            if p.name.is_empty() {
                bad(format!("providers[{i}].name"), "must not be empty".into());
            } else if !names.insert(p.name.as_str()) {
                bad(
                    format!("providers[{i}].name"),
                    format!("\"{}\" is used by an earlier provider", p.name),
                );
            }
            if let Some(r) = &p.resilience
                && let Err(err) = r.validate()
            {
                bad(format!("providers[{i}].resilience"), err.to_string());
            }
        }
        let known_providers = names.iter().copied().collect::<Vec<_>>().join(", ");
        for (name, m) in &self.models {
            if name.is_empty() {
                bad("models".into(), "a model name must not be empty".into());
            }
            if !names.contains(m.provider.as_str()) {
                bad(
                    format!("models.{name}.provider"),
                    format!(
                        "unknown provider \"{}\" (known: {known_providers})",
                        m.provider
                    ),
                );
            }
            for (i, f) in m.fallbacks.iter().enumerate() {
                if !self.models.contains_key(f) {
                    bad(
                        format!("models.{name}.fallbacks[{i}]"),
                        format!("unknown model \"{f}\" (known: {})", self.model_names()),
                    );
                } else if f == name {
                    bad(
                        format!("models.{name}.fallbacks[{i}]"),
                        "a model cannot be its own fallback".into(),
                    );
                }
            }
            if m.context_window == Some(0) {
                bad(
                    format!("models.{name}.context_window"),
                    "must be at least 1".into(),
                );
            }
        }
        let a = &self.advisor;
        if a.max_models == 0 {
            bad("advisor.max_models".into(), "must be at least 1".into());
        }
        if a.max_question_chars == 0 {
            bad(
                "advisor.max_question_chars".into(),
                "must be at least 1".into(),
            );
        }
        if a.default_models.is_empty() {
            bad(
                "advisor.default_models".into(),
                "must name at least one model (requests without `models` ask them)".into(),
            );
        }
        if a.default_models.len() > a.max_models {
            bad(
                "advisor.default_models".into(),
                format!(
                    "{} models, more than advisor.max_models ({})",
                    a.default_models.len(),
                    a.max_models
                ),
            );
        }
        for (i, m) in a.default_models.iter().enumerate() {
            if !self.models.contains_key(m) {
                bad(
                    format!("advisor.default_models[{i}]"),
                    format!("unknown model \"{m}\" (known: {})", self.model_names()),
                );
            }
        }
        out
    }

    /// The configured model names, comma-separated.
    #[must_use]
    pub fn model_names(&self) -> String {
        self.models.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    /// The configuration as YAML with secrets replaced by `<redacted>`: every provider setting
    /// whose key names a key, token, secret or password, and a password in the store URL.
    ///
    /// # Errors
    ///
    /// A [`quorum_config::ConfigError`] if the configuration cannot be rendered.
    pub fn redacted_yaml(&self) -> Result<String, quorum_config::ConfigError> {
        let mut shown = self.clone();
        shown.store.url = redact_url_password(&shown.store.url);
        for p in &mut shown.providers {
            for (key, value) in &mut p.settings {
                if is_secret_key(key) && !value.is_null() {
                    *value = Value::String("<redacted>".to_owned());
                }
            }
        }
        quorum_config::dump(&shown)
    }

    /// One line of the effective settings, logged at start-up.
    #[must_use]
    pub fn summary(&self) -> String {
        let providers = self
            .providers
            .iter()
            .map(|p| format!("{}({})", p.name, p.kind))
            .collect::<Vec<_>>()
            .join(",");
        let r = &self.resilience;
        format!(
            "bind={} store={} providers=[{providers}] models={} default_models=[{}] \
             max_concurrent_jobs={} queue_capacity={} job_timeout={} retry.max_attempts={} \
             retry.initial_delay={} retry.max_delay={} attempt_timeout={} max_streams={} \
             body_limit={} threads={}",
            self.server.bind,
            redact_url_password(&self.store.url),
            self.models.len(),
            self.advisor.default_models.join(","),
            self.engine.max_concurrent_jobs,
            self.engine.queue_capacity,
            self.engine.job_timeout,
            r.retry.max_attempts,
            r.retry.initial_delay,
            r.retry.max_delay,
            r.timeout,
            self.server.max_streams,
            self.server.body_limit,
            self.server.threads(),
        )
    }
}

fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["key", "token", "secret", "password", "authorization"]
        .iter()
        .any(|s| k.contains(s))
}

/// `postgres://user:pw@host/db` → `postgres://user:<redacted>@host/db`.
fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:<redacted>@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_ask_the_ollama_models() {
        let c = AdvisorConfig::default();
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert_eq!(c.advisor.default_models, DEFAULT_MODELS);
        assert_eq!(c.engine.max_concurrent_jobs, 5);
        assert_eq!(
            c.providers[0].settings["base_url"],
            "http://localhost:11434"
        );
    }

    #[test]
    fn problems_name_their_keys() {
        let yaml = "
server: {threads: 300}
engine: {max_concurrent_jobs: 0}
providers:
  - {name: a, kind: openai}
  - {name: a, kind: openai}
models:
  m: {provider: nope, fallbacks: [m, zz]}
advisor: {default_models: [m, q]}
";
        let c: AdvisorConfig = Loader::from_str("t.yaml", yaml).load().unwrap();
        let fields: Vec<_> = c.problems().into_iter().map(|p| p.field).collect();
        for f in [
            "server.threads",
            "engine.max_concurrent_jobs",
            "providers[1].name",
            "models.m.provider",
            "models.m.fallbacks[0]",
            "models.m.fallbacks[1]",
            "advisor.default_models[1]",
        ] {
            assert!(fields.iter().any(|x| x == f), "{f} missing from {fields:?}");
        }
    }

    #[test]
    fn threads_default_to_one_event_loop_and_zero_means_one_per_core() {
        let mut c = AdvisorConfig::default();
        assert_eq!(c.server.threads(), 1);
        assert!(c.summary().contains("threads=1"), "{}", c.summary());
        c.server.threads = 0;
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        assert_eq!(c.server.threads(), cores);
        c.server.threads = 4;
        assert_eq!(c.server.threads(), 4);
        assert!(c.problems().is_empty());
    }

    #[test]
    fn an_empty_default_model_set_is_refused() {
        let mut c = AdvisorConfig::default();
        c.advisor.default_models.clear();
        let problems = c.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].field, "advisor.default_models");
    }

    #[test]
    fn secrets_are_redacted() {
        let yaml = "
store: {url: 'postgres://u:hunter2@db/x'}
providers:
  - {name: o, kind: openai, base_url: 'http://x/v1', api_key: sk-live-123}
models: {m: {provider: o}}
advisor: {default_models: [m]}
";
        let c: AdvisorConfig = Loader::from_str("t.yaml", yaml).load().unwrap();
        assert_eq!(c.providers[0].settings["api_key"], "sk-live-123");
        let shown = c.redacted_yaml().unwrap();
        assert!(!shown.contains("sk-live-123"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(!c.summary().contains("hunter2"));
    }
}
