//! Reading the environment through [`EnvSource`], and turning `PREFIX__A__B` variables into
//! overrides.

use std::collections::BTreeMap;

use crate::error::{ConfigError, ErrorKind, KeyPath, Origin, Segment};
use crate::overrides::{Override, parse_value};

/// Where environment variables come from: the process ([`ProcessEnv`]) or a map ([`MapEnv`]),
/// so tests and embedders never touch the real environment.
pub trait EnvSource {
    /// The value of one variable, if set.
    fn get(&self, name: &str) -> Option<String>;
    /// All variables (used to find `PREFIX__...` overrides).
    fn vars(&self) -> Vec<(String, String)>;
}

/// The process environment. Variables that are not valid UTF-8 are treated as unset.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect()
    }
}

/// An environment given as a map, for tests and embedders.
///
/// ```
/// use quorum_config::{EnvSource, MapEnv};
/// let env = MapEnv::from([("QUORUM__SERVER__PORT", "9000")]);
/// assert_eq!(env.get("QUORUM__SERVER__PORT").as_deref(), Some("9000"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapEnv(BTreeMap<String, String>);

impl MapEnv {
    /// An empty environment.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a variable.
    #[must_use]
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.insert(name.into(), value.into());
        self
    }
}

impl<K: Into<String>, V: Into<String>, const N: usize> From<[(K, V); N]> for MapEnv {
    fn from(vars: [(K, V); N]) -> Self {
        vars.into_iter().collect()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for MapEnv {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl EnvSource for MapEnv {
    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }

    fn vars(&self) -> Vec<(String, String)> {
        self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// The overrides named by `PREFIX__...` variables, in an order where list items come in index
/// order (so `__0__` is applied before `__1__`, and `__10__` after `__9__`).
pub(crate) fn env_overrides(
    source: &dyn EnvSource,
    prefix: &str,
) -> Result<Vec<Override>, ConfigError> {
    let head = format!("{prefix}__");
    let mut overrides = Vec::new();
    for (name, value) in source.vars() {
        let Some(rest) = name.strip_prefix(&head) else {
            continue;
        };
        let origin = Origin::Env { var: name.clone() };
        let mut path = Vec::new();
        for part in rest.split("__") {
            if part.is_empty() {
                let message = format!("`{name}` has an empty path segment");
                return Err(ConfigError::at(
                    ErrorKind::Override { message },
                    &KeyPath::default(),
                    Some(&origin),
                ));
            }
            path.push(match part.parse::<usize>() {
                Ok(index) => Segment::Index(index),
                Err(_) => Segment::Key(part.to_lowercase()),
            });
        }
        let value = parse_value(&value, &origin)?;
        overrides.push(Override { path, value });
    }
    overrides.sort_by(|a, b| sort_key(&a.path).cmp(&sort_key(&b.path)));
    Ok(overrides)
}

fn sort_key(path: &[Segment]) -> Vec<(usize, &str)> {
    path.iter()
        .map(|s| match s {
            Segment::Index(i) => (*i, ""),
            Segment::Key(k) => (usize::MAX, k.as_str()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_env_reads_back() {
        let env = MapEnv::new().with("A", "1").with("B", "2");
        assert_eq!(env.get("A").as_deref(), Some("1"));
        assert_eq!(env.get("C"), None);
        assert_eq!(env.vars().len(), 2);
    }

    #[test]
    fn process_env_reads_something() {
        // Read-only: PATH is set wherever tests run; we never mutate the environment.
        assert!(ProcessEnv.vars().iter().any(|(k, _)| k == "PATH"));
        assert_eq!(ProcessEnv.get("PATH"), std::env::var("PATH").ok());
    }

    #[test]
    fn variables_become_lowercased_paths_in_index_order() {
        let env = MapEnv::from([
            ("QUORUM__LIST__10__NAME", "ten"),
            ("QUORUM__LIST__2__NAME", "two"),
            ("QUORUM__SERVER__PORT", "9000"),
            ("QUORUM_LOG", "ignored"),
            ("OTHER__X", "ignored"),
        ]);
        let paths: Vec<String> = env_overrides(&env, "QUORUM")
            .unwrap()
            .iter()
            .map(|o| KeyPath::from(o.path.clone()).to_string())
            .collect();
        assert_eq!(paths, ["list[2].name", "list[10].name", "server.port"]);
    }

    #[test]
    fn empty_segment_is_an_error() {
        let env = MapEnv::from([("QUORUM__A____B", "1")]);
        let err = env_overrides(&env, "QUORUM").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid override: `QUORUM__A____B` has an empty path segment (env QUORUM__A____B)"
        );
    }
}
