//! Configuration machinery for Quorum: layered YAML, environment and CLI overrides, typed
//! durations, sizes and secrets, and errors that say exactly where a bad value came from.
//!
//! Each crate owns its typed config struct (`#[serde(default, deny_unknown_fields)]`); this
//! crate loads it. Layers, lowest first:
//!
//! 1. **defaults** — the target type's `Default` / `#[serde(default)]`;
//! 2. **YAML sources** — files or strings, in the order added, with `${VAR}`, `${VAR:-default}`
//!    and `$$` (a literal `$`) expanded in values;
//! 3. **environment** — `QUORUM__SECTION__KEY=value` (prefix configurable, `__` separates
//!    segments, segments lowercased, a numeric segment indexes a list:
//!    `QUORUM__PROVIDERS__0__BASE_URL`);
//! 4. **CLI overrides** — `--set section.key=value` strings (`a.b[2].c=v` or `a.b.2.c=v`).
//!
//! **Value rule for env and CLI:** a value is a plain scalar, typed by the field it lands in
//! (`9000` fills a `u16`, `30s` a [`Duration`], `true` a `bool`, `fast` an enum variant), unless
//! it starts with `[`, `{`, `"` or `'`, in which case it is parsed as inline YAML (JSON works
//! too): `--set models=[a,b]`, `--set labels={team: core}`, `--set name="007"`. `null`, `~` or an
//! empty value set an `Option` to `None`. A list index may address an existing item or append
//! one (index equal to the length); overrides are applied in index order.
//!
//! **Typing:** plain YAML scalars resolve like YAML 1.2's core schema for self-describing
//! targets; a field that asks for a number or bool parses any scalar's text (so `port: "80"`
//! works) and a `String` field takes any scalar's text (`version: 1.10` is `"1.10"`). A null or
//! empty value for a struct, map or list means "empty" (so `server:` with every line commented
//! out gives the defaults). Enums: unit variants as strings, others as a one-key map
//! (`{variant: value}`). Anchors, aliases and `<<` merge keys are supported.
//!
//! **Errors** ([`ConfigError`]) are one line with the full key path and the value's
//! [`Origin`]: `server.port: invalid type: string "abc", expected u16 (quorum.yaml:3:9)`; unknown
//! keys suggest the closest field.
//!
//! **Limitations:** `#[serde(flatten)]`, internally tagged and untagged enums work, but serde
//! routes them through its own buffer, so errors inside them point at the enclosing map and
//! quoted numbers are not coerced there. Mapping keys in [`dump`] output are sorted.
//!
//! ```
//! use quorum_config::{Duration, Loader, MapEnv, Secret};
//! use serde::Deserialize;
//!
//! #[derive(Debug, Default, Deserialize)]
//! #[serde(default, deny_unknown_fields)]
//! struct Server {
//!     port: u16,
//!     timeout: Option<Duration>,
//! }
//!
//! #[derive(Debug, Default, Deserialize)]
//! #[serde(default, deny_unknown_fields)]
//! struct Config {
//!     server: Server,
//!     models: Vec<String>,
//!     api_key: Secret,
//! }
//!
//! let yaml = "server:\n  port: 8080\n  timeout: ${TIMEOUT:-30s}\napi_key: ${API_KEY}\n";
//! let env = MapEnv::from([("QUORUM__SERVER__PORT", "9000"), ("API_KEY", "sk-123")]);
//! let cfg: Config = Loader::from_str("quorum.yaml", yaml)
//!     .env(env, "QUORUM")
//!     .overrides(["models=[gpt-4o, claude]"])?
//!     .load()?;
//! assert_eq!(cfg.server.port, 9000);
//! assert_eq!(cfg.server.timeout, Some(Duration::from_secs(30)));
//! assert_eq!(cfg.models, ["gpt-4o", "claude"]);
//! assert_eq!(cfg.api_key.expose(), "sk-123");
//!
//! let err = Loader::from_str("quorum.yaml", "server:\n  prot: 1\n").load::<Config>().unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "server.prot: unknown field `prot`, did you mean `port`? (quorum.yaml:2:3)"
//! );
//! # Ok::<(), quorum_config::ConfigError>(())
//! ```

mod de;
mod dump;
mod env;
mod error;
mod expand;
mod loader;
mod node;
mod overrides;
mod types;

pub use dump::dump;
pub use env::{EnvSource, MapEnv, ProcessEnv};
pub use error::{ConfigError, ErrorKind, KeyPath, Origin, Segment};
pub use loader::Loader;
pub use types::{ByteSize, ByteSizeError, Duration, DurationError, REDACTED, Secret};
