//! The document tree: YAML parsed into [`Node`]s that remember their [`Origin`], plus the
//! layering operations (deep merge of files, setting a value at a path for env/CLI overrides).

use std::collections::HashMap;
use std::sync::Arc;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::error::{ConfigError, ErrorKind, KeyPath, Origin, Segment};

/// Deepest nesting accepted, so hostile input cannot exhaust the stack.
const MAX_DEPTH: usize = 128;
/// Most nodes one document may expand to (aliases included), against "billion laughs" input.
const MAX_NODES: usize = 1_000_000;

/// A value in the layered document.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) kind: NodeKind,
    /// `None` only for the empty root synthesized when no source has a document.
    pub(crate) origin: Option<Origin>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NodeKind {
    /// A scalar's text. `quoted` scalars (quoted or block style) are always strings; plain ones
    /// are resolved (null, bool, int, float, string) by what the target type asks for.
    Scalar {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    pub(crate) fn new(kind: NodeKind, origin: Option<Origin>) -> Self {
        Self { kind, origin }
    }

    pub(crate) fn empty_map(origin: Option<Origin>) -> Self {
        Self::new(NodeKind::Map(Vec::new()), origin)
    }

    pub(crate) fn plain(text: impl Into<String>, origin: Option<Origin>) -> Self {
        let text = text.into();
        Self::new(
            NodeKind::Scalar {
                text,
                quoted: false,
            },
            origin,
        )
    }

    /// The text of a scalar node.
    pub(crate) fn as_text(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// A map key as a path segment (complex keys are shown by kind).
    pub(crate) fn key_segment(&self) -> Segment {
        Segment::Key(self.as_text().unwrap_or("<complex key>").to_owned())
    }

    /// Whether this is a plain `null`, `~` or empty scalar.
    pub(crate) fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { text, quoted: false } if is_null_text(text))
    }

    fn count(&self) -> usize {
        match &self.kind {
            NodeKind::Scalar { .. } => 1,
            NodeKind::Seq(items) => 1 + items.iter().map(Self::count).sum::<usize>(),
            NodeKind::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| k.count() + v.count())
                    .sum::<usize>()
            }
        }
    }

    /// Layers `other` over `self`: maps merge key by key, anything else is replaced.
    pub(crate) fn merge(&mut self, other: Self) {
        match (&mut self.kind, other.kind) {
            (NodeKind::Map(mine), NodeKind::Map(theirs)) => {
                for (key, value) in theirs {
                    match mine.iter_mut().find(|(k, _)| k.kind == key.kind) {
                        Some((_, slot)) => slot.merge(value),
                        None => mine.push((key, value)),
                    }
                }
            }
            (_, kind) => *self = Self::new(kind, other.origin),
        }
    }

    /// Replaces the value at `path` (relative to `self`, whose own path is `at`), creating
    /// intermediate maps and lists as needed. A list index may address an existing item or
    /// append one (index == length).
    pub(crate) fn set(
        &mut self,
        path: &[Segment],
        value: Self,
        at: &mut KeyPath,
    ) -> Result<(), ConfigError> {
        let Some((first, rest)) = path.split_first() else {
            *self = value;
            return Ok(());
        };
        let origin = value.origin.clone();
        let fail = |message: String, at: &KeyPath| {
            ConfigError::at(ErrorKind::Override { message }, at, origin.as_ref())
        };
        // A scalar (usually the empty placeholder of a new key) becomes the container needed.
        if let NodeKind::Scalar { .. } = self.kind {
            let kind = match first {
                Segment::Index(_) => NodeKind::Seq(Vec::new()),
                Segment::Key(_) => NodeKind::Map(Vec::new()),
            };
            *self = Self::new(kind, origin.clone());
        }
        let child = match (first, &mut self.kind) {
            (Segment::Index(index), NodeKind::Map(entries)) => {
                map_slot(entries, &index.to_string(), &origin)
            }
            (Segment::Key(key), NodeKind::Map(entries)) => map_slot(entries, key, &origin),
            (Segment::Index(index), NodeKind::Seq(items)) => match items.len() {
                len if *index < len => &mut items[*index],
                len if *index == len => {
                    items.push(Self::plain("", origin.clone()));
                    &mut items[len]
                }
                len => {
                    let message =
                        format!("index {index} is out of range, the list has {len} items");
                    return Err(fail(message, at));
                }
            },
            (Segment::Key(key), _) => {
                return Err(fail(format!("cannot set key `{key}` on a list"), at));
            }
            (Segment::Index(_), NodeKind::Scalar { .. }) => {
                return Err(fail("cannot index a scalar".to_owned(), at));
            }
        };
        at.push(first.clone());
        child.set(rest, value, at)
    }
}

/// The value for `key` in a map, inserted as an empty scalar when absent.
fn map_slot<'a>(
    entries: &'a mut Vec<(Node, Node)>,
    key: &str,
    origin: &Option<Origin>,
) -> &'a mut Node {
    let index = match entries.iter().position(|(k, _)| k.as_text() == Some(key)) {
        Some(index) => index,
        None => {
            entries.push((
                Node::plain(key, origin.clone()),
                Node::plain("", origin.clone()),
            ));
            entries.len() - 1
        }
    };
    &mut entries[index].1
}

pub(crate) fn is_null_text(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

/// Where parsed nodes come from: positions in a named file, or one fixed origin for a value
/// given inline in an env variable or `--set` argument.
#[derive(Debug, Clone)]
pub(crate) enum SourceName {
    File(Arc<str>),
    Fixed(Origin),
}

impl SourceName {
    fn origin(&self, mark: Marker) -> Origin {
        match self {
            Self::File(name) => Origin::File {
                name: Arc::clone(name),
                line: mark.line(),
                column: mark.col() + 1,
            },
            Self::Fixed(origin) => origin.clone(),
        }
    }
}

/// Parses one YAML document. `Ok(None)` means the text holds no document at all.
pub(crate) fn parse(text: &str, source: &SourceName) -> Result<Option<Node>, ConfigError> {
    let mut builder = Builder {
        parser: Parser::new_from_str(text),
        source,
        anchors: HashMap::new(),
        nodes: 0,
        path: KeyPath::default(),
    };
    builder.document()
}

struct Builder<'a> {
    parser: Parser<std::str::Chars<'a>>,
    source: &'a SourceName,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    path: KeyPath,
}

impl Builder<'_> {
    fn next(&mut self) -> Result<(Event, Marker), ConfigError> {
        self.parser.next_token().map_err(|e| {
            let message = e.info().to_owned();
            ConfigError::at(
                ErrorKind::Syntax { message },
                &self.path,
                Some(&self.source.origin(*e.marker())),
            )
        })
    }

    fn error(&self, message: impl Into<String>, mark: Marker) -> ConfigError {
        let kind = ErrorKind::Syntax {
            message: message.into(),
        };
        ConfigError::at(kind, &self.path, Some(&self.source.origin(mark)))
    }

    fn document(&mut self) -> Result<Option<Node>, ConfigError> {
        let mut document = None;
        loop {
            match self.next()? {
                (Event::StreamStart | Event::DocumentEnd | Event::Nothing, _) => {}
                (Event::StreamEnd, _) => return Ok(document),
                (Event::DocumentStart, mark) if document.is_some() => {
                    return Err(
                        self.error("multiple documents in one source are not supported", mark)
                    );
                }
                (Event::DocumentStart, _) => {
                    let (event, mark) = self.next()?;
                    document = Some(self.node(event, mark, 0)?);
                }
                (_, mark) => return Err(self.error("unexpected content outside a document", mark)),
            }
        }
    }

    fn node(&mut self, event: Event, mark: Marker, depth: usize) -> Result<Node, ConfigError> {
        if depth > MAX_DEPTH {
            return Err(self.error(format!("nesting deeper than {MAX_DEPTH} levels"), mark));
        }
        self.nodes += 1;
        let origin = Some(self.source.origin(mark));
        let (node, anchor) = match event {
            Event::Scalar(text, style, anchor, _tag) => {
                let quoted = style != TScalarStyle::Plain;
                (Node::new(NodeKind::Scalar { text, quoted }, origin), anchor)
            }
            Event::SequenceStart(anchor, _tag) => {
                let mut items = Vec::new();
                loop {
                    let (event, mark) = self.next()?;
                    if event == Event::SequenceEnd {
                        break;
                    }
                    self.path.push(Segment::Index(items.len()));
                    let item = self.node(event, mark, depth + 1);
                    self.path.pop();
                    items.push(item?);
                }
                (Node::new(NodeKind::Seq(items), origin), anchor)
            }
            Event::MappingStart(anchor, _tag) => (self.mapping(origin, depth)?, anchor),
            Event::Alias(id) => {
                let node = self
                    .anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| self.error("alias to an unknown anchor", mark))?;
                self.nodes += node.count();
                (node, 0)
            }
            _ => return Err(self.error("unexpected YAML event", mark)),
        };
        if self.nodes > MAX_NODES {
            return Err(self.error(
                format!("document expands to more than {MAX_NODES} values"),
                mark,
            ));
        }
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }

    fn mapping(&mut self, origin: Option<Origin>, depth: usize) -> Result<Node, ConfigError> {
        let mut entries: Vec<(Node, Node)> = Vec::new();
        let mut merges = Vec::new();
        loop {
            let (event, mark) = self.next()?;
            if event == Event::MappingEnd {
                break;
            }
            let key = self.node(event, mark, depth + 1)?;
            let (event, value_mark) = self.next()?;
            self.path.push(key.key_segment());
            let value = self.node(event, value_mark, depth + 1);
            self.path.pop();
            let value = value?;
            if matches!(&key.kind, NodeKind::Scalar { text, quoted: false } if text == "<<") {
                merges.push((value, mark));
            } else if key.as_text().is_some() && entries.iter().any(|(k, _)| k.kind == key.kind) {
                let message = format!("duplicate key `{}`", key.as_text().unwrap_or_default());
                self.path.push(key.key_segment());
                let err = self.error(message, mark);
                return Err(err);
            } else {
                entries.push((key, value));
            }
        }
        // Merge keys (`<<: *base` or `<<: [*a, *b]`): explicit keys win, then earlier maps.
        for (value, mark) in merges {
            let sources = match value.kind {
                NodeKind::Seq(items) => items,
                NodeKind::Map(_) => vec![value],
                NodeKind::Scalar { .. } => {
                    return Err(
                        self.error("merge key `<<` needs a mapping or a list of mappings", mark)
                    );
                }
            };
            for source in sources {
                let NodeKind::Map(source) = source.kind else {
                    return Err(
                        self.error("merge key `<<` needs a mapping or a list of mappings", mark)
                    );
                };
                for (key, value) in source {
                    if !entries.iter().any(|(k, _)| k.kind == key.kind) {
                        entries.push((key, value));
                    }
                }
            }
        }
        // The parser marks a block mapping's start after its first key; the key's own position
        // is where a reader looks.
        let origin = entries
            .first()
            .map_or(origin, |(key, _)| key.origin.clone());
        Ok(Node::new(NodeKind::Map(entries), origin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Result<Option<Node>, ConfigError> {
        parse(text, &SourceName::File("t.yaml".into()))
    }

    /// The tree without origins or quoting, for comparisons.
    fn shape(node: &Node) -> String {
        match &node.kind {
            NodeKind::Scalar { text, .. } => text.clone(),
            NodeKind::Seq(items) => format!(
                "[{}]",
                items.iter().map(shape).collect::<Vec<_>>().join(", ")
            ),
            NodeKind::Map(entries) => {
                let entries: Vec<String> = entries
                    .iter()
                    .map(|(k, v)| format!("{}: {}", shape(k), shape(v)))
                    .collect();
                format!("{{{}}}", entries.join(", "))
            }
        }
    }

    fn get<'a>(node: &'a Node, key: &str) -> &'a Node {
        match &node.kind {
            NodeKind::Map(entries) => {
                &entries
                    .iter()
                    .find(|(k, _)| k.as_text() == Some(key))
                    .unwrap()
                    .1
            }
            _ => panic!("not a map"),
        }
    }

    #[test]
    fn records_positions_and_quoting() {
        let root = file("server:\n  port: 8080\n  name: \"x\"\n")
            .unwrap()
            .unwrap();
        let port = get(get(&root, "server"), "port");
        assert_eq!(port.as_text(), Some("8080"));
        assert_eq!(port.origin.as_ref().unwrap().to_string(), "t.yaml:2:9");
        let name = get(get(&root, "server"), "name");
        assert!(matches!(name.kind, NodeKind::Scalar { quoted: true, .. }));
    }

    #[test]
    fn empty_text_has_no_document() {
        assert_eq!(file("").unwrap(), None);
        assert_eq!(file("# only a comment\n").unwrap(), None);
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = file("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Syntax { .. }));
        assert!(
            err.origin().unwrap().to_string().starts_with("t.yaml:"),
            "{err}"
        );
        let err = file("a: 1\na: 2\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "a: invalid YAML: duplicate key `a` (t.yaml:2:1)"
        );
        let err = file("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid YAML: multiple documents in one source are not supported (t.yaml:2:1)"
        );
    }

    #[test]
    fn aliases_and_merge_keys() {
        let root = file("base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  y: 3\nd: *b\n")
            .unwrap()
            .unwrap();
        let c = get(&root, "c");
        assert_eq!(get(c, "x").as_text(), Some("1"));
        assert_eq!(get(c, "y").as_text(), Some("3"));
        assert_eq!(get(get(&root, "d"), "y").as_text(), Some("2"));
        let err = file("a: {<<: 1}").unwrap_err();
        assert!(err.to_string().contains("merge key"), "{err}");
    }

    #[test]
    fn alias_bombs_and_deep_nesting_are_refused() {
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let p = i - 1;
            bomb.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
        }
        let err = file(&bomb).unwrap_err();
        assert!(err.to_string().contains("expands to more than"), "{err}");
        let deep = "[".repeat(200) + &"]".repeat(200);
        let err = file(&deep).unwrap_err();
        let expected = format!(
            "{}: invalid YAML: nesting deeper than 128 levels (t.yaml:1:130)",
            "[0]".repeat(129)
        );
        assert_eq!(err.to_string(), expected);
        let deeper = "[".repeat(5000) + &"]".repeat(5000);
        let err = file(&deeper).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Syntax { .. }), "{err}");
    }

    #[test]
    fn merge_layers_maps_and_replaces_the_rest() {
        let mut base = file("a: {x: 1, y: [1, 2]}\nb: 1\n").unwrap().unwrap();
        base.merge(file("a: {y: [3]}\nc: 2\n").unwrap().unwrap());
        assert_eq!(shape(&base), "{a: {x: 1, y: [3]}, b: 1, c: 2}");
    }

    #[test]
    fn set_creates_and_indexes() {
        let origin = Some(Origin::Cli { arg: "x".into() });
        let mut root = file("list: [a, b]\n").unwrap().unwrap();
        let mut set = |path: Vec<Segment>, value: &str| {
            root.set(
                &path,
                Node::plain(value, origin.clone()),
                &mut KeyPath::default(),
            )
        };
        set(vec![Segment::Key("list".into()), Segment::Index(1)], "B").unwrap();
        set(vec![Segment::Key("list".into()), Segment::Index(2)], "c").unwrap();
        let err = set(vec![Segment::Key("list".into()), Segment::Index(9)], "z").unwrap_err();
        assert_eq!(
            err.to_string(),
            "list: invalid override: index 9 is out of range, the list has 3 items (--set x)"
        );
        set(
            vec![
                Segment::Key("new".into()),
                Segment::Index(0),
                Segment::Key("k".into()),
            ],
            "v",
        )
        .unwrap();
        let err = set(
            vec![Segment::Key("list".into()), Segment::Key("k".into())],
            "v",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("cannot set key `k` on a list"),
            "{err}"
        );
        assert_eq!(shape(&root), "{list: [a, B, c], new: [{k: v}]}");
    }
}
