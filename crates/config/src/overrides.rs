//! `--set section.key=value` overrides and the value rule shared with environment variables.
//!
//! A value is taken verbatim as a plain scalar (typed by the target field) unless it starts with
//! `[`, `{`, `"` or `'`: then it is parsed as inline YAML (so JSON works too), e.g.
//! `models=[a, b]`, `labels={team: core}`, `name="007"`.

use crate::error::{ConfigError, ErrorKind, KeyPath, Origin, Segment};
use crate::node::{Node, SourceName, parse};

/// One override: a path and the node to put there.
#[derive(Debug, Clone)]
pub(crate) struct Override {
    pub(crate) path: Vec<Segment>,
    pub(crate) value: Node,
}

/// Applies the value rule to a raw env/CLI value.
pub(crate) fn parse_value(raw: &str, origin: &Origin) -> Result<Node, ConfigError> {
    if raw.starts_with(['[', '{', '"', '\'']) {
        let parsed = parse(raw, &SourceName::Fixed(origin.clone()))?;
        Ok(parsed.unwrap_or_else(|| Node::plain("", Some(origin.clone()))))
    } else {
        Ok(Node::plain(raw, Some(origin.clone())))
    }
}

/// Parses one `section.key=value` argument (`a.b[2].c=v` and `a.b.2.c=v` both index a list).
pub(crate) fn parse_set(arg: &str) -> Result<Override, ConfigError> {
    let origin = Origin::Cli {
        arg: arg.to_owned(),
    };
    let fail = |message: String| {
        ConfigError::at(
            ErrorKind::Override { message },
            &KeyPath::default(),
            Some(&origin),
        )
    };
    let Some((key, raw)) = arg.split_once('=') else {
        return Err(fail("expected `key=value`".to_owned()));
    };
    let path = parse_path(key.trim()).map_err(fail)?;
    let value = parse_value(raw, &origin)?;
    Ok(Override { path, value })
}

fn parse_path(key: &str) -> Result<Vec<Segment>, String> {
    let mut path = Vec::new();
    let mut chars = key.chars().peekable();
    loop {
        let mut name = String::new();
        while let Some(c) = chars.next_if(|&c| !matches!(c, '.' | '[' | ']')) {
            name.push(c);
        }
        if name.is_empty() {
            return Err(format!("empty key in `{key}`"));
        }
        path.push(match name.parse::<usize>() {
            Ok(index) => Segment::Index(index),
            Err(_) => Segment::Key(name),
        });
        while chars.next_if_eq(&'[').is_some() {
            let mut digits = String::new();
            while let Some(c) = chars.next_if(|&c| c != ']') {
                digits.push(c);
            }
            if chars.next().is_none() {
                return Err(format!("unclosed `[` in `{key}`"));
            }
            let index = digits
                .trim()
                .parse()
                .map_err(|_| format!("invalid list index `{digits}` in `{key}`"))?;
            path.push(Segment::Index(index));
        }
        match chars.next() {
            None => return Ok(path),
            Some('.') => {}
            Some(c) => return Err(format!("unexpected `{c}` in `{key}`")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::NodeKind;

    fn path(arg: &str) -> String {
        KeyPath::from(parse_set(arg).unwrap().path).to_string()
    }

    #[test]
    fn paths_with_dots_and_brackets() {
        assert_eq!(path("server.port=1"), "server.port");
        assert_eq!(path("a.b[2].c=v"), "a.b[2].c");
        assert_eq!(path("a.b.2.c=v"), "a.b[2].c");
        assert_eq!(path("a[0][1]=v"), "a[0][1]");
        assert_eq!(path(" a = v"), "a");
    }

    #[test]
    fn value_keeps_everything_after_the_first_equals() {
        let o = parse_set("url=http://x/?a=b").unwrap();
        assert_eq!(o.value.as_text(), Some("http://x/?a=b"));
        assert!(!o.value.is_null());
        assert!(parse_set("name=").unwrap().value.is_null());
    }

    #[test]
    fn inline_yaml_values() {
        let o = parse_set("models=[a, b]").unwrap();
        assert!(matches!(&o.value.kind, NodeKind::Seq(items) if items.len() == 2));
        let o = parse_set(r#"labels={"team": "core"}"#).unwrap();
        assert!(matches!(&o.value.kind, NodeKind::Map(entries) if entries.len() == 1));
        let o = parse_set("name='007'").unwrap();
        assert!(matches!(&o.value.kind, NodeKind::Scalar { text, quoted: true } if text == "007"));
        let err = parse_set("models=[a, b").unwrap_err();
        assert!(err.to_string().starts_with("invalid YAML: "), "{err}");
        assert!(err.to_string().ends_with("(--set models=[a, b)"), "{err}");
    }

    #[test]
    fn malformed_arguments() {
        let msg = |arg: &str| parse_set(arg).unwrap_err().to_string();
        assert_eq!(
            msg("server.port"),
            "invalid override: expected `key=value` (--set server.port)"
        );
        assert_eq!(
            msg("a..b=1"),
            "invalid override: empty key in `a..b` (--set a..b=1)"
        );
        assert_eq!(msg("=1"), "invalid override: empty key in `` (--set =1)");
        assert_eq!(
            msg("a[x]=1"),
            "invalid override: invalid list index `x` in `a[x]` (--set a[x]=1)"
        );
        assert_eq!(
            msg("a[1=1"),
            "invalid override: unclosed `[` in `a[1` (--set a[1=1)"
        );
        assert_eq!(
            msg("a[1]b=1"),
            "invalid override: unexpected `b` in `a[1]b` (--set a[1]b=1)"
        );
        assert_eq!(
            msg("a]=1"),
            "invalid override: unexpected `]` in `a]` (--set a]=1)"
        );
    }
}
