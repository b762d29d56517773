//! The error type, key paths, value origins and "did you mean" suggestions.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// A YAML source: a file path or the name given to [`Loader::from_str`](crate::Loader::from_str).
    File {
        /// File path or source name.
        name: Arc<str>,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// An environment variable, named in full (`QUORUM__SERVER__PORT`).
    Env {
        /// The variable's name.
        var: String,
    },
    /// A command-line override, the raw `section.key=value` string given to `--set`.
    Cli {
        /// The override as given.
        arg: String,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File { name, line, column } => write!(f, "{name}:{line}:{column}"),
            Self::Env { var } => write!(f, "env {var}"),
            Self::Cli { arg } => write!(f, "--set {arg}"),
        }
    }
}

/// One step of a [`KeyPath`]: a map key or a list index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Segment {
    /// A map key.
    Key(String),
    /// A list index.
    Index(usize),
}

/// The full path of a value from the document root, shown as `providers[2].base_url`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct KeyPath(Vec<Segment>);

impl KeyPath {
    /// The path's segments, root first.
    #[must_use]
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    /// Whether this is the document root.
    #[must_use]
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// This path extended by one segment.
    #[must_use]
    pub(crate) fn join(&self, segment: Segment) -> Self {
        let mut segments = self.0.clone();
        segments.push(segment);
        Self(segments)
    }

    pub(crate) fn push(&mut self, segment: Segment) {
        self.0.push(segment);
    }

    pub(crate) fn pop(&mut self) {
        self.0.pop();
    }
}

impl From<Vec<Segment>> for KeyPath {
    fn from(segments: Vec<Segment>) -> Self {
        Self(segments)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// What went wrong; part of a [`ConfigError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A required config file does not exist.
    #[error("config file {} not found", path.display())]
    FileNotFound {
        /// The path that was looked up.
        path: PathBuf,
    },
    /// A config file exists but could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Io {
        /// The file's path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The YAML text (a file, or an inline env/CLI value) is malformed.
    #[error("invalid YAML: {message}")]
    Syntax {
        /// The parser's message.
        message: String,
    },
    /// A `${VAR}` reference names an unset variable and gives no default.
    #[error("environment variable `{name}` is not set")]
    MissingVar {
        /// The variable's name.
        name: String,
    },
    /// A malformed `${...}` reference.
    #[error("invalid variable reference: {message}")]
    Interpolation {
        /// What is wrong with it.
        message: String,
    },
    /// A malformed `--set` override or environment variable name, or one that does not fit
    /// the document's shape.
    #[error("invalid override: {message}")]
    Override {
        /// What is wrong with it.
        message: String,
    },
    /// A key the target type does not know.
    #[error("unknown field `{field}`{}", hint(suggestion.as_deref(), expected))]
    UnknownField {
        /// The key as written.
        field: String,
        /// The closest known field, when one is close enough.
        suggestion: Option<String>,
        /// All known fields.
        expected: Vec<String>,
    },
    /// An enum variant the target type does not know.
    #[error("unknown variant `{variant}`{}", hint(suggestion.as_deref(), expected))]
    UnknownVariant {
        /// The variant as written.
        variant: String,
        /// The closest known variant, when one is close enough.
        suggestion: Option<String>,
        /// All known variants.
        expected: Vec<String>,
    },
    /// A required field is absent.
    #[error("missing field `{field}`")]
    MissingField {
        /// The field's name.
        field: String,
    },
    /// A value of the wrong type or an invalid value (including errors raised by a field's own
    /// `Deserialize` impl, such as a bad duration).
    #[error("{message}")]
    Invalid {
        /// The message, e.g. `invalid type: string "abc", expected u16`.
        message: String,
    },
    /// The configuration could not be rendered by [`dump`](crate::dump).
    #[error("cannot render config: {message}")]
    Dump {
        /// The serializer's message.
        message: String,
    },
}

fn hint(suggestion: Option<&str>, expected: &[String]) -> String {
    match (suggestion, expected) {
        (Some(s), _) => format!(", did you mean `{s}`?"),
        (None, []) => ", there are no fields here".to_owned(),
        (None, list) => {
            let list: Vec<String> = list.iter().map(|e| format!("`{e}`")).collect();
            format!(", expected one of {}", list.join(", "))
        }
    }
}

#[derive(Debug)]
struct Inner {
    path: KeyPath,
    origin: Option<Origin>,
    kind: ErrorKind,
    located: bool,
}

/// A configuration error: what went wrong ([`kind`](Self::kind)), at which key
/// ([`path`](Self::path)) and where the offending value came from ([`origin`](Self::origin)).
///
/// Displays as one line: `providers[2].base_url: invalid URL "htp:/x" (quorum.yaml:14:15)`.
#[derive(Debug)]
pub struct ConfigError(Box<Inner>);

impl ConfigError {
    /// An error with no location yet; the deserializer adds one as it unwinds.
    pub(crate) fn new(kind: ErrorKind) -> Self {
        Self(Box::new(Inner {
            path: KeyPath::default(),
            origin: None,
            kind,
            located: false,
        }))
    }

    /// An error at a known location.
    pub(crate) fn at(kind: ErrorKind, path: &KeyPath, origin: Option<&Origin>) -> Self {
        Self::new(kind).located(path, origin)
    }

    /// Sets the location unless an inner frame already did.
    pub(crate) fn located(mut self, path: &KeyPath, origin: Option<&Origin>) -> Self {
        if !self.0.located {
            self.0.path = path.clone();
            self.0.origin = origin.cloned();
            self.0.located = true;
        }
        self
    }

    /// The key path of the offending value (empty for the root or for file-level errors).
    #[must_use]
    pub fn path(&self) -> &KeyPath {
        &self.0.path
    }

    /// Where the offending value came from, if known.
    #[must_use]
    pub fn origin(&self) -> Option<&Origin> {
        self.0.origin.as_ref()
    }

    /// What went wrong.
    #[must_use]
    pub fn kind(&self) -> &ErrorKind {
        &self.0.kind
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.0.path.is_root() {
            write!(f, "{}: ", self.0.path)?;
        }
        write!(f, "{}", self.0.kind)?;
        if let Some(origin) = &self.0.origin {
            write!(f, " ({origin})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0.kind)
    }
}

impl serde::de::Error for ConfigError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::new(ErrorKind::Invalid {
            message: msg.to_string(),
        })
    }

    fn invalid_type(unexp: serde::de::Unexpected<'_>, exp: &dyn serde::de::Expected) -> Self {
        match unexp {
            serde::de::Unexpected::Unit => {
                Self::custom(format_args!("invalid type: null, expected {exp}"))
            }
            other => Self::custom(format_args!("invalid type: {other}, expected {exp}")),
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Self::new(ErrorKind::UnknownField {
            field: field.to_owned(),
            suggestion: suggest(field, expected).map(str::to_owned),
            expected: expected.iter().map(|&e| e.to_owned()).collect(),
        })
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Self::new(ErrorKind::UnknownVariant {
            variant: variant.to_owned(),
            suggestion: suggest(variant, expected).map(str::to_owned),
            expected: expected.iter().map(|&e| e.to_owned()).collect(),
        })
    }

    fn missing_field(field: &'static str) -> Self {
        Self::new(ErrorKind::MissingField {
            field: field.to_owned(),
        })
    }
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a likely typo:
/// at most a third of the word's length (and at least one edit) away.
pub(crate) fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|&c| (edit_distance(word, c), c))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Edit distance counting insertions, deletions, substitutions and swaps of adjacent characters
/// (optimal string alignment), so `prot` is one edit from `port`.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::Error as _;

    #[test]
    fn edit_distance_matches_known_values() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("prot", "port"), 1);
        assert_eq!(edit_distance("ca", "abc"), 3);
        assert_eq!(edit_distance("port", "port"), 0);
        assert_eq!(edit_distance("timout", "timeout"), 1);
        assert_eq!(edit_distance("héllo", "hello"), 1);
    }

    #[test]
    fn suggestion_only_when_close() {
        let fields = ["port", "host", "timeout"];
        assert_eq!(suggest("timout", &fields), Some("timeout"));
        assert_eq!(suggest("prot", &fields), Some("port"));
        assert_eq!(
            suggest("pxyt", &fields),
            None,
            "two edits on four letters is too far"
        );
        assert_eq!(suggest("pot", &fields), Some("port"));
        assert_eq!(suggest("banana", &fields), None);
        assert_eq!(suggest("x", &[]), None);
    }

    #[test]
    fn display_is_one_line_with_path_and_origin() {
        let path = KeyPath::from(vec![
            Segment::Key("providers".into()),
            Segment::Index(2),
            Segment::Key("base_url".into()),
        ]);
        let origin = Origin::File {
            name: "quorum.yaml".into(),
            line: 14,
            column: 15,
        };
        let err = ConfigError::custom("invalid URL \"htp:/x\"").located(&path, Some(&origin));
        assert_eq!(
            err.to_string(),
            r#"providers[2].base_url: invalid URL "htp:/x" (quorum.yaml:14:15)"#
        );
        // The first location wins.
        let err = err.located(&KeyPath::default(), None);
        assert_eq!(err.path().to_string(), "providers[2].base_url");
        let env = ConfigError::missing_field("port").located(
            &KeyPath::default(),
            Some(&Origin::Env { var: "Q__X".into() }),
        );
        assert_eq!(env.to_string(), "missing field `port` (env Q__X)");
    }

    #[test]
    fn unknown_field_lists_or_suggests() {
        let err = ConfigError::unknown_field("hots", &["host", "port"]);
        assert_eq!(
            err.to_string(),
            "unknown field `hots`, did you mean `host`?"
        );
        let err = ConfigError::unknown_field("zzz", &["host", "port"]);
        assert_eq!(
            err.to_string(),
            "unknown field `zzz`, expected one of `host`, `port`"
        );
        let err = ConfigError::unknown_field("zzz", &[]);
        assert_eq!(
            err.to_string(),
            "unknown field `zzz`, there are no fields here"
        );
        let err = ConfigError::unknown_variant("gpt", &["gpt4", "claude"]);
        assert_eq!(
            err.to_string(),
            "unknown variant `gpt`, did you mean `gpt4`?"
        );
    }
}
