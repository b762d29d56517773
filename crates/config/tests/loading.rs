//! End-to-end loading of a realistic nested config through every layer.

use std::collections::BTreeMap;

use quorum_config::{ByteSize, ConfigError, Duration, ErrorKind, Loader, MapEnv, Origin, Secret};
use serde::{Deserialize, Serialize};

/// A URL checked by its own `Deserialize` (via `TryFrom`), like a real provider crate would.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
struct BaseUrl(String);

impl TryFrom<String> for BaseUrl {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = ["http://", "https://"]
            .iter()
            .any(|p| s.strip_prefix(p).is_some_and(|rest| !rest.is_empty()));
        if ok {
            Ok(Self(s))
        } else {
            Err(format!("invalid URL \"{s}\""))
        }
    }
}

impl From<BaseUrl> for String {
    fn from(url: BaseUrl) -> Self {
        url.0
    }
}

#[derive(Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    server: Server,
    providers: Vec<Provider>,
    queue: Queue,
    log_level: LogLevel,
    tags: BTreeMap<String, String>,
}

#[derive(Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct Server {
    host: String,
    port: u16,
    request_timeout: Duration,
    max_body: ByteSize,
    tls: Option<Tls>,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 80,
            request_timeout: Duration::from_secs(10),
            max_body: ByteSize::new(1 << 20),
            tls: None,
        }
    }
}

#[derive(Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Tls {
    cert: String,
    key: String,
}

#[derive(Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Provider {
    name: String,
    kind: ProviderKind,
    base_url: BaseUrl,
    #[serde(default)]
    api_key: Option<Secret>,
    #[serde(default = "default_timeout")]
    timeout: Duration,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default = "one")]
    weight: f64,
    #[serde(default = "yes")]
    enabled: bool,
}

fn default_timeout() -> Duration {
    Duration::from_secs(60)
}
fn one() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}

#[derive(Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum ProviderKind {
    #[serde(rename = "openai")]
    OpenAi,
    Anthropic,
    Mock {
        latency: Duration,
    },
}

#[derive(Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct Queue {
    backlog: u32,
    retry: Retry,
}

#[derive(Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Retry {
    #[default]
    None,
    Exponential {
        base: Duration,
        max: Duration,
    },
}

#[derive(Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
enum LogLevel {
    Debug,
    #[default]
    Info,
    Warn,
}

const YAML: &str = "\
server:
  host: 0.0.0.0
  port: 8080
  request_timeout: 30s
  max_body: 10MiB
providers:
  - name: openai
    kind: openai
    base_url: https://api.openai.com/v1
    api_key: ${OPENAI_API_KEY}
    timeout: 1m30s
    models: [gpt-4o, gpt-4o-mini]
  - name: local
    kind: {mock: {latency: 250ms}}
    base_url: ${LOCAL_URL:-http://localhost:8080}
    weight: 0.5
queue:
  backlog: 1000
  retry: {exponential: {base: 100ms, max: 10s}}
log_level: warn
tags:
  team: core
";

fn base_env() -> MapEnv {
    MapEnv::from([("OPENAI_API_KEY", "sk-very-secret")])
}

fn load(yaml: &str) -> Result<Config, ConfigError> {
    Loader::from_str("quorum.yaml", yaml)
        .env(base_env(), "QUORUM")
        .load()
}

fn load_err(yaml: &str) -> String {
    match load(yaml) {
        Ok(cfg) => panic!("expected an error, loaded {cfg:?}"),
        Err(err) => err.to_string(),
    }
}

/// The fixture with one line replaced (1-based).
fn with_line(line: usize, text: &str) -> String {
    let mut lines: Vec<&str> = YAML.lines().collect();
    lines[line - 1] = text;
    lines.join("\n") + "\n"
}

#[test]
fn loads_the_full_file() {
    let cfg = load(YAML).unwrap();
    assert_eq!(cfg.server.host, "0.0.0.0");
    assert_eq!(cfg.server.port, 8080);
    assert_eq!(cfg.server.request_timeout, Duration::from_secs(30));
    assert_eq!(cfg.server.max_body, ByteSize::new(10 << 20));
    assert_eq!(cfg.server.tls, None);
    let [openai, local] = &cfg.providers[..] else {
        panic!("two providers expected")
    };
    assert_eq!(openai.kind, ProviderKind::OpenAi);
    assert_eq!(
        openai.api_key.as_ref().map(Secret::expose),
        Some("sk-very-secret")
    );
    assert_eq!(openai.timeout, Duration::from_secs(90));
    assert_eq!(openai.models, ["gpt-4o", "gpt-4o-mini"]);
    assert_eq!((openai.weight, openai.enabled), (1.0, true));
    assert_eq!(
        local.kind,
        ProviderKind::Mock {
            latency: Duration::from_millis(250)
        }
    );
    assert_eq!(
        local.base_url,
        BaseUrl("http://localhost:8080".into()),
        "${{VAR:-default}} used the default"
    );
    assert_eq!(local.api_key, None);
    assert_eq!(local.weight, 0.5);
    assert_eq!(cfg.queue.backlog, 1000);
    assert_eq!(
        cfg.queue.retry,
        Retry::Exponential {
            base: Duration::from_millis(100),
            max: Duration::from_secs(10)
        }
    );
    assert_eq!(cfg.log_level, LogLevel::Warn);
    assert_eq!(cfg.tags["team"], "core");
}

#[test]
fn layers_apply_in_order_defaults_file_env_cli() {
    let base = "server:\n  port: 8080\n  max_body: 2MiB\n";
    let second = "server:\n  max_body: 4MiB\n  request_timeout: 5s\n";
    let env = MapEnv::from([
        ("QUORUM__SERVER__PORT", "9000"),
        ("QUORUM__SERVER__REQUEST_TIMEOUT", "7s"),
    ]);
    let cfg: Config = Loader::from_str("base.yaml", base)
        .text("second.yaml", second)
        .env(env, "QUORUM")
        .overrides(["server.port=9100"])
        .unwrap()
        .load()
        .unwrap();
    assert_eq!(cfg.server.host, "127.0.0.1", "default kept");
    assert_eq!(
        cfg.server.max_body,
        ByteSize::new(4 << 20),
        "later file wins over earlier"
    );
    assert_eq!(
        cfg.server.request_timeout,
        Duration::from_secs(7),
        "env wins over file"
    );
    assert_eq!(cfg.server.port, 9100, "cli wins over env");

    let cfg: Config = Loader::new().load().unwrap();
    assert_eq!(cfg, Config::default(), "no sources: all defaults");

    let cfg: Config = Loader::from_str("q.yaml", "server:\n  port: 1\n")
        .overrides(["server.port=2", "server.port=3"])
        .unwrap()
        .load()
        .unwrap();
    assert_eq!(cfg.server.port, 3, "the last override wins");
}

#[test]
fn env_values_are_typed_by_their_target() {
    let env = base_env()
        .with("QUORUM__SERVER__PORT", "9000")
        .with("QUORUM__SERVER__MAX_BODY", "1GiB")
        .with("QUORUM__SERVER__TLS", "{cert: c.pem, key: k.pem}")
        .with("QUORUM__PROVIDERS__0__ENABLED", "false")
        .with("QUORUM__PROVIDERS__0__MODELS", r#"["a", "b"]"#)
        .with("QUORUM__PROVIDERS__1__WEIGHT", "0.25")
        .with("QUORUM__PROVIDERS__1__KIND", "anthropic")
        .with("QUORUM__LOG_LEVEL", "debug")
        .with("QUORUM__TAGS__ENV", "prod")
        .with("QUORUM__SERVER__HOST", "12345")
        .with("QUORUM_UNRELATED", "x");
    let cfg: Config = Loader::from_str("quorum.yaml", YAML)
        .env(env, "QUORUM")
        .load()
        .unwrap();
    assert_eq!(cfg.server.port, 9000);
    assert_eq!(cfg.server.max_body, ByteSize::new(1 << 30));
    assert_eq!(
        cfg.server.tls,
        Some(Tls {
            cert: "c.pem".into(),
            key: "k.pem".into()
        })
    );
    assert_eq!(
        cfg.server.host, "12345",
        "a number-looking value fills a String as text"
    );
    assert!(!cfg.providers[0].enabled);
    assert_eq!(cfg.providers[0].models, ["a", "b"]);
    assert_eq!(cfg.providers[1].weight, 0.25);
    assert_eq!(cfg.providers[1].kind, ProviderKind::Anthropic);
    assert_eq!(cfg.log_level, LogLevel::Debug);
    assert_eq!(cfg.tags.get("env").map(String::as_str), Some("prod"));
}

#[test]
fn lists_are_indexed_from_env_and_cli() {
    let env = base_env().with("QUORUM__PROVIDERS__1__BASE_URL", "https://local.test");
    let cfg: Config = Loader::from_str("quorum.yaml", YAML)
        .env(env, "QUORUM")
        .overrides([
            "providers[0].timeout=5s",
            "providers.1.name=renamed",
            "providers[2].name=claude",
            "providers[2].kind=anthropic",
            "providers[2].base_url=https://api.anthropic.com",
            "providers[2].api_key=\"sk-2\"",
            "providers[0].models[2]=o1",
        ])
        .unwrap()
        .load()
        .unwrap();
    assert_eq!(cfg.providers[0].timeout, Duration::from_secs(5));
    assert_eq!(cfg.providers[0].models, ["gpt-4o", "gpt-4o-mini", "o1"]);
    assert_eq!(cfg.providers[1].name, "renamed");
    assert_eq!(
        cfg.providers[1].base_url,
        BaseUrl("https://local.test".into())
    );
    assert_eq!(cfg.providers.len(), 3, "index == length appends");
    assert_eq!(cfg.providers[2].kind, ProviderKind::Anthropic);
    assert_eq!(
        cfg.providers[2].api_key.as_ref().map(Secret::expose),
        Some("sk-2")
    );

    let err = Loader::from_str("quorum.yaml", YAML)
        .env(base_env(), "QUORUM")
        .overrides(["providers[5].name=x"])
        .unwrap()
        .load::<Config>()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "providers: invalid override: index 5 is out of range, the list has 2 items (--set providers[5].name=x)"
    );
}

#[test]
fn variable_expansion_and_missing_variables() {
    let env = base_env().with("LOCAL_URL", "http://10.0.0.1:9000");
    let cfg: Config = Loader::from_str("quorum.yaml", YAML)
        .env(env, "QUORUM")
        .load()
        .unwrap();
    assert_eq!(
        cfg.providers[1].base_url,
        BaseUrl("http://10.0.0.1:9000".into())
    );

    let yaml = "server:\n  port: ${PORT}\n  host: $${literal}\n";
    let cfg: Config = Loader::from_str("q.yaml", yaml)
        .env(MapEnv::from([("PORT", "7000")]), "QUORUM")
        .load()
        .unwrap();
    assert_eq!(
        cfg.server.port, 7000,
        "an expanded plain scalar is still typed"
    );
    assert_eq!(cfg.server.host, "${literal}");

    let err = Loader::from_str("quorum.yaml", YAML)
        .load::<Config>()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "providers[0].api_key: environment variable `OPENAI_API_KEY` is not set (quorum.yaml:10:14)"
    );
    assert!(matches!(err.kind(), ErrorKind::MissingVar { name } if name == "OPENAI_API_KEY"));
}

#[test]
fn unknown_keys_suggest_the_closest_field() {
    let err = load(&with_line(4, "  request_timout: 30s")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "server.request_timout: unknown field `request_timout`, did you mean `request_timeout`? (quorum.yaml:4:3)"
    );
    assert_eq!(err.path().to_string(), "server.request_timout");
    assert_eq!(
        err.origin(),
        Some(&Origin::File {
            name: "quorum.yaml".into(),
            line: 4,
            column: 3
        })
    );
    assert!(
        matches!(err.kind(), ErrorKind::UnknownField { suggestion: Some(s), .. } if s == "request_timeout")
    );

    assert_eq!(
        load_err(&with_line(16, "    wieght: 0.5")),
        "providers[1].wieght: unknown field `wieght`, did you mean `weight`? (quorum.yaml:16:5)"
    );
    assert_eq!(
        load_err(&with_line(20, "colour: blue")),
        "colour: unknown field `colour`, expected one of `server`, `providers`, `queue`, `log_level`, `tags`"
            .to_owned()
            + " (quorum.yaml:20:1)"
    );
    assert_eq!(
        load_err(&with_line(20, "log_level: inof")),
        "log_level: unknown variant `inof`, did you mean `info`? (quorum.yaml:20:12)"
    );
    let err = Loader::from_str("q.yaml", "")
        .env(MapEnv::from([("QUORUM__SERVER__PROT", "1")]), "QUORUM")
        .load::<Config>();
    assert_eq!(
        err.unwrap_err().to_string(),
        "server.prot: unknown field `prot`, did you mean `port`? (env QUORUM__SERVER__PROT)"
    );
}

#[test]
fn wrong_types_name_path_and_location() {
    assert_eq!(
        load_err(&with_line(3, "  port: abc")),
        r#"server.port: invalid type: string "abc", expected u16 (quorum.yaml:3:9)"#
    );
    assert_eq!(
        load_err(&with_line(3, "  port: 70000")),
        "server.port: invalid value: integer `70000`, expected u16 (quorum.yaml:3:9)"
    );
    assert_eq!(
        load_err(&with_line(3, "  port: [1]")),
        "server.port: invalid type: sequence, expected u16 (quorum.yaml:3:9)"
    );
    assert_eq!(
        load_err(&with_line(5, "  max_body: ~")),
        r#"server.max_body: invalid type: null, expected a byte size such as "10MiB" or a number of bytes (quorum.yaml:5:13)"#
    );
    let env = base_env().with("QUORUM__SERVER__PORT", "abc");
    let err = Loader::from_str("quorum.yaml", YAML)
        .env(env, "QUORUM")
        .load::<Config>()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"server.port: invalid type: string "abc", expected u16 (env QUORUM__SERVER__PORT)"#
    );
    let err = Loader::from_str("quorum.yaml", YAML)
        .env(base_env(), "QUORUM")
        .overrides(["providers[0].enabled=maybe"])
        .unwrap()
        .load::<Config>()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"providers[0].enabled: invalid type: string "maybe", expected a boolean (--set providers[0].enabled=maybe)"#
    );
    assert_eq!(
        load_err(&with_line(15, "    base_url: htp:/x")),
        r#"providers[1].base_url: invalid URL "htp:/x" (quorum.yaml:15:15)"#
    );
    assert_eq!(
        load_err("providers:\n  - name: x\n    kind: openai\n"),
        "providers[0]: missing field `base_url` (quorum.yaml:2:5)"
    );
    assert_eq!(
        load_err("queue:\n  retry: {exponential: {base: 1s}, none: ~}\n"),
        "queue.retry: expected a variant name or a map with exactly one key naming the variant, found a map with 2 keys (quorum.yaml:2:11)"
    );
}

#[test]
fn bad_durations_and_sizes() {
    assert_eq!(
        load_err(&with_line(4, "  request_timeout: 30")),
        r#"server.request_timeout: invalid duration "30": missing unit, e.g. "30s" (units: ns, us, ms, s, m, h, d) (quorum.yaml:4:20)"#
    );
    assert_eq!(
        load_err(&with_line(11, "    timeout: 5 minutes")),
        r#"providers[0].timeout: invalid duration "5 minutes": unknown unit " minutes" (units: ns, us, ms, s, m, h, d) (quorum.yaml:11:14)"#
    );
    assert_eq!(
        load_err(&with_line(5, "  max_body: 10XB")),
        r#"server.max_body: invalid byte size "10XB": unknown unit "XB" (units: B, KB, MB, GB, TB, PB, KiB, MiB, GiB, TiB, PiB) (quorum.yaml:5:13)"#
    );
    assert_eq!(
        load_err(&with_line(14, "    kind: {mock: {latency: fast}}")),
        r#"providers[1].kind.mock.latency: invalid duration "fast": expected a non-negative number before each unit (quorum.yaml:14:28)"#
    );
}

#[test]
fn yaml_syntax_errors_have_a_location() {
    let err = load(&with_line(3, "  port: [8080")).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Syntax { .. }));
    assert_eq!(
        err.to_string(),
        "server.port: invalid YAML: illegal placement of ':' indicator (quorum.yaml:4:18)"
    );
    let err = load("server:\n  port: 1\n bad\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid YAML: while parsing a block mapping, did not find expected key (quorum.yaml:3:2)"
    );
    let err = load("a: \"unterminated\n").unwrap_err();
    assert!(err.to_string().contains("(quorum.yaml:"), "{err}");
}

#[test]
fn files_missing_optional_and_unreadable() {
    let dir = std::env::temp_dir().join(format!("quorum-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("quorum.yaml");
    std::fs::write(&path, "server:\n  port: abc\n").unwrap();
    let err = Loader::new().file(&path).load::<Config>().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            r#"server.port: invalid type: string "abc", expected u16 ({}:2:9)"#,
            path.display()
        )
    );
    std::fs::write(&path, "server:\n  port: 1234\n").unwrap();
    let cfg: Config = Loader::new()
        .file(&path)
        .optional_file(dir.join("absent.yaml"))
        .load()
        .unwrap();
    assert_eq!(cfg.server.port, 1234);

    let missing = dir.join("missing.yaml");
    let err = Loader::new().file(&missing).load::<Config>().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("config file {} not found", missing.display())
    );

    let err = Loader::new().file(&dir).load::<Config>().unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!("cannot read config file {}: ", dir.display())),
        "{shown}"
    );
    assert!(
        std::error::Error::source(&err).is_some(),
        "the OS error is chained"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn secrets_are_redacted_everywhere() {
    let cfg = load(YAML).unwrap();
    let debug = format!("{cfg:?} {cfg:#?}");
    let dumped = quorum_config::dump(&cfg).unwrap();
    for shown in [
        &debug,
        &dumped,
        &cfg.providers[0].api_key.as_ref().unwrap().to_string(),
    ] {
        assert!(!shown.contains("sk-very-secret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
    assert!(dumped.contains("  - api_key: <redacted>\n"), "{dumped}");
}

#[test]
fn dump_round_trips() {
    let cfg = load(YAML).unwrap();
    let text = quorum_config::dump(&cfg).unwrap();
    let mut again: Config = Loader::from_str("dump.yaml", text.as_str()).load().unwrap();
    assert_eq!(
        again.providers[0].api_key,
        Some(Secret::new("<redacted>")),
        "the dump holds no secret"
    );
    again.providers[0]
        .api_key
        .clone_from(&cfg.providers[0].api_key);
    assert_eq!(again, cfg);

    let mut odd = Config::default();
    odd.tags.insert("quoted".into(), "true".into());
    odd.tags.insert("dollar".into(), "${NOT_A_VAR}".into());
    odd.tags.insert("empty".into(), String::new());
    odd.tags.insert("colon".into(), "a: b # c".into());
    odd.tags.insert("multi".into(), "line one\nline two".into());
    odd.server.host = "0123".into();
    let text = quorum_config::dump(&odd).unwrap();
    let again: Config = Loader::from_str("dump.yaml", text.as_str()).load().unwrap();
    assert_eq!(again, odd, "{text}");
}

#[test]
fn nulls_aliases_and_merge_keys() {
    let cfg = load("server:\n  # everything commented out\nproviders:\nqueue: ~\n").unwrap();
    assert_eq!(cfg, Config::default());
    let cfg = load("server: {tls: ~}\n").unwrap();
    assert_eq!(cfg.server.tls, None);
    let yaml = "\
defaults: &d
  kind: openai
  timeout: 5s
";
    assert!(load(yaml).is_err(), "unknown top-level key");
    let yaml = "\
providers:
  - &first
    name: a
    kind: openai
    base_url: https://a.test
    timeout: 5s
  - <<: *first
    name: b
";
    let cfg = load(yaml).unwrap();
    assert_eq!(cfg.providers[1].name, "b");
    assert_eq!(cfg.providers[1].timeout, Duration::from_secs(5));
    assert_eq!(cfg.providers[1].base_url, BaseUrl("https://a.test".into()));
}

#[test]
fn origins_report_where_each_value_came_from() {
    let env = base_env().with("QUORUM__SERVER__PORT", "9000");
    let origins = Loader::from_str("quorum.yaml", YAML)
        .env(env, "QUORUM")
        .overrides(["log_level=debug"])
        .unwrap()
        .origins()
        .unwrap();
    let find = |path: &str| {
        origins
            .iter()
            .find(|(p, _)| p.to_string() == path)
            .map(|(_, o)| o.to_string())
    };
    assert_eq!(
        find("server.port").as_deref(),
        Some("env QUORUM__SERVER__PORT")
    );
    assert_eq!(find("server.host").as_deref(), Some("quorum.yaml:2:9"));
    assert_eq!(
        find("providers[0].models[1]").as_deref(),
        Some("quorum.yaml:12:22")
    );
    assert_eq!(find("log_level").as_deref(), Some("--set log_level=debug"));
}

#[test]
fn malformed_overrides_fail_early() {
    let err = Loader::new().overrides(["server.port"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid override: expected `key=value` (--set server.port)"
    );
    let err = Loader::new().overrides(["models=[a, b"]).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Syntax { .. }));
}

/// A small deterministic generator, so the garbage is reproducible.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

#[test]
fn garbage_never_panics() {
    let mut rng = Lcg(42);
    let alphabet: Vec<char> = "ab:-[]{},&*!|>'\"%@`#? \n\t$~<.0123456789\\\u{0}é"
        .chars()
        .collect();
    let mut inputs: Vec<String> = vec![
        String::new(),
        "\u{feff}".into(),
        "---\n...\n---\n".into(),
        "*unknown".into(),
        "&a [*a]".into(),
        "? [a, b]\n: c\n".into(),
        "server: !!binary aGVsbG8=\n".into(),
        "%YAML 1.2\n---\nserver: {}\n".into(),
        "providers: [[[[]]]]".into(),
        "server: {port: 1e999}".into(),
        "server: {port: -0x8000000000000000}".into(),
        "queue: {retry: {exponential: 1}}".into(),
        "\"\\u{d800}\"".into(),
    ];
    for _ in 0..1500 {
        let len = (rng.next() % 60) as usize;
        inputs.push(
            (0..len)
                .map(|_| alphabet[(rng.next() as usize) % alphabet.len()])
                .collect(),
        );
    }
    // Near-valid input: the fixture with a few characters replaced.
    for _ in 0..1500 {
        let mut chars: Vec<char> = YAML.chars().collect();
        for _ in 0..(1 + rng.next() % 4) {
            let at = (rng.next() as usize) % chars.len();
            chars[at] = alphabet[(rng.next() as usize) % alphabet.len()];
        }
        inputs.push(chars.into_iter().collect());
    }
    let mut errors = 0;
    for input in &inputs {
        let result = Loader::from_str("fuzz.yaml", input.as_str())
            .env(
                base_env().with("QUORUM__PROVIDERS__0__NAME", input.as_str()),
                "QUORUM",
            )
            .load::<Config>();
        if let Err(err) = result {
            errors += 1;
            assert!(
                !err.to_string().contains('\n') || input.contains('\n'),
                "one line: {err}"
            );
        }
        let _ = Loader::new()
            .overrides([format!("a.{input}={input}")])
            .map(|l| l.load::<Config>());
        let _ = Loader::new()
            .overrides([input.as_str()])
            .map(|l| l.load::<Config>());
        let _ = input.parse::<Duration>();
        let _ = input.parse::<ByteSize>();
    }
    assert!(errors > 1000, "most garbage is rejected ({errors})");
}
