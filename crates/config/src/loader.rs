//! The [`Loader`]: sources in order, then env, then CLI overrides, then deserialization.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::de::NodeDe;
use crate::env::{EnvSource, MapEnv, env_overrides};
use crate::error::{ConfigError, ErrorKind, KeyPath, Origin, Segment};
use crate::expand::expand_tree;
use crate::node::{Node, NodeKind, SourceName, parse};
use crate::overrides::{Override, parse_set};

enum Source {
    File { path: PathBuf, required: bool },
    Text { name: Arc<str>, text: String },
}

/// Builds a configuration from layers: defaults (the target type's `#[serde(default)]`) <
/// YAML sources (in the order added; maps merge key by key, anything else is replaced) <
/// environment variables < `--set` overrides.
///
/// ```
/// # #[derive(serde::Deserialize, Default)] #[serde(default)] struct Server { port: u16 }
/// # #[derive(serde::Deserialize, Default)] #[serde(default)] struct MyConfig { server: Server }
/// use quorum_config::{Loader, MapEnv};
/// let cfg: MyConfig = Loader::new()
///     .optional_file("/nonexistent/quorum.yaml")
///     .env(MapEnv::from([("QUORUM__SERVER__PORT", "8000")]), "QUORUM")
///     .overrides(["server.port=9000"])?
///     .load()?;
/// assert_eq!(cfg.server.port, 9000);
/// # Ok::<(), quorum_config::ConfigError>(())
/// ```
#[derive(Default)]
pub struct Loader {
    sources: Vec<Source>,
    env: Option<(Box<dyn EnvSource + Send + Sync>, String)>,
    overrides: Vec<Override>,
}

impl fmt::Debug for Loader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sources: Vec<String> = self
            .sources
            .iter()
            .map(|s| match s {
                Source::File { path, .. } => path.display().to_string(),
                Source::Text { name, .. } => name.to_string(),
            })
            .collect();
        f.debug_struct("Loader")
            .field("sources", &sources)
            .field("env_prefix", &self.env.as_ref().map(|(_, prefix)| prefix))
            .field("overrides", &self.overrides.len())
            .finish()
    }
}

impl Loader {
    /// A loader with no sources: loading gives the target type's defaults.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A loader whose first source is YAML `text`, reported in errors as `name` (for tests and
    /// embedded defaults).
    #[must_use]
    pub fn from_str(name: impl Into<String>, text: impl Into<String>) -> Self {
        Self::new().text(name, text)
    }

    /// Adds YAML `text` as a source, reported in errors as `name`.
    #[must_use]
    pub fn text(mut self, name: impl Into<String>, text: impl Into<String>) -> Self {
        let name: String = name.into();
        self.sources.push(Source::Text {
            name: name.into(),
            text: text.into(),
        });
        self
    }

    /// Adds a YAML file that must exist.
    #[must_use]
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.sources.push(Source::File {
            path: path.into(),
            required: true,
        });
        self
    }

    /// Adds a YAML file that is skipped when it does not exist.
    #[must_use]
    pub fn optional_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.sources.push(Source::File {
            path: path.into(),
            required: false,
        });
        self
    }

    /// Reads overrides from variables `PREFIX__SECTION__KEY` (segments lowercased; a numeric
    /// segment indexes a list) and resolves `${VAR}` references in sources from `source`.
    /// Without this, `${VAR}` sees no variables (only `${VAR:-default}` works).
    #[must_use]
    pub fn env(
        mut self,
        source: impl EnvSource + Send + Sync + 'static,
        prefix: impl Into<String>,
    ) -> Self {
        self.env = Some((Box::new(source), prefix.into()));
        self
    }

    /// Adds `--set` overrides, each a raw `section.key=value` string (`a.b[2].c=v` or
    /// `a.b.2.c=v`). A value is a plain scalar typed by its target field, or inline YAML/JSON
    /// when it starts with `[`, `{`, `"` or `'`. Later overrides win.
    ///
    /// # Errors
    ///
    /// When an argument has no `=`, a malformed key or malformed inline YAML.
    pub fn overrides<I, S>(mut self, args: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for arg in args {
            self.overrides.push(parse_set(arg.as_ref())?);
        }
        Ok(self)
    }

    /// Loads all layers and deserializes `T` from them.
    ///
    /// # Errors
    ///
    /// A missing required file, an unreadable file, malformed YAML, an unset `${VAR}`, an
    /// override that does not fit the document, or a value `T` rejects (unknown key, wrong type,
    /// invalid value). The error carries the key path and the value's origin.
    pub fn load<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let root = self.tree()?;
        T::deserialize(NodeDe::new(&root, KeyPath::default()))
            .map_err(|e| e.located(&KeyPath::default(), root.origin.as_ref()))
    }

    /// Every value set by a source, env variable or override (leaves only), with its origin;
    /// values not listed come from the target type's defaults.
    ///
    /// # Errors
    ///
    /// As for [`load`](Self::load), except that nothing is checked against a target type.
    pub fn origins(&self) -> Result<Vec<(KeyPath, Origin)>, ConfigError> {
        fn walk(node: &Node, path: &mut KeyPath, out: &mut Vec<(KeyPath, Origin)>) {
            let children: Vec<(Segment, &Node)> = match &node.kind {
                NodeKind::Scalar { .. } => Vec::new(),
                NodeKind::Seq(items) => items
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (Segment::Index(i), n))
                    .collect(),
                NodeKind::Map(entries) => {
                    entries.iter().map(|(k, v)| (k.key_segment(), v)).collect()
                }
            };
            if children.is_empty()
                && let Some(origin) = &node.origin
            {
                out.push((path.clone(), origin.clone()));
            }
            for (segment, child) in children {
                path.push(segment);
                walk(child, path, out);
                path.pop();
            }
        }
        let mut out = Vec::new();
        walk(&self.tree()?, &mut KeyPath::default(), &mut out);
        Ok(out)
    }

    /// The merged document.
    fn tree(&self) -> Result<Node, ConfigError> {
        let no_env = MapEnv::new();
        let vars: &dyn EnvSource = match &self.env {
            Some((source, _)) => source.as_ref(),
            None => &no_env,
        };
        let mut root: Option<Node> = None;
        for source in &self.sources {
            let (name, text) = match source {
                Source::Text { name, text } => (Arc::clone(name), text.clone()),
                Source::File { path, required } => match std::fs::read_to_string(path) {
                    Ok(text) => (path.display().to_string().into(), text),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(ConfigError::new(ErrorKind::FileNotFound {
                            path: path.clone(),
                        }));
                    }
                    Err(source) => {
                        return Err(ConfigError::new(ErrorKind::Io {
                            path: path.clone(),
                            source,
                        }));
                    }
                },
            };
            let Some(mut node) = parse(&text, &SourceName::File(name))? else {
                continue;
            };
            expand_tree(&mut node, vars, &mut KeyPath::default())?;
            match &mut root {
                Some(root) => root.merge(node),
                None => root = Some(node),
            }
        }
        let mut root = root.unwrap_or_else(|| Node::empty_map(None));
        let env = match &self.env {
            Some((source, prefix)) => env_overrides(source.as_ref(), prefix)?,
            None => Vec::new(),
        };
        for Override { path, value } in env.into_iter().chain(self.overrides.iter().cloned()) {
            root.set(&path, value, &mut KeyPath::default())?;
        }
        Ok(root)
    }
}
