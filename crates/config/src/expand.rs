//! `${VAR}` and `${VAR:-default}` expansion in the values of YAML sources (`$$` is a literal `$`).
//!
//! Expansion applies to every value scalar of a file (not to keys, and not to env/CLI values,
//! which the shell has already expanded). A `$` not followed by `{` or `$` is kept as is.

use crate::env::EnvSource;
use crate::error::{ConfigError, ErrorKind, KeyPath};
use crate::node::{Node, NodeKind};

/// Expands every value scalar under `node` (whose path is `path`).
pub(crate) fn expand_tree(
    node: &mut Node,
    env: &dyn EnvSource,
    path: &mut KeyPath,
) -> Result<(), ConfigError> {
    match &mut node.kind {
        NodeKind::Scalar { text, .. } => {
            if text.contains('$') {
                *text = expand(text, env)
                    .map_err(|kind| ConfigError::at(kind, path, node.origin.as_ref()))?;
            }
        }
        NodeKind::Seq(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                path.push(crate::error::Segment::Index(index));
                let result = expand_tree(item, env, path);
                path.pop();
                result?;
            }
        }
        NodeKind::Map(entries) => {
            for (key, value) in entries {
                path.push(key.key_segment());
                let result = expand_tree(value, env, path);
                path.pop();
                result?;
            }
        }
    }
    Ok(())
}

/// Expands one string.
pub(crate) fn expand(text: &str, env: &dyn EnvSource) -> Result<String, ErrorKind> {
    let bad = |message: String| ErrorKind::Interpolation { message };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| bad(format!("unclosed `${{` in \"{text}\"")))?;
            let (name, default) = match body[..end].split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (&body[..end], None),
            };
            let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(bad(format!(
                    "`${{{}}}` is not a valid variable name",
                    &body[..end]
                )));
            }
            match (env.get(name), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err(ErrorKind::MissingVar {
                        name: name.to_owned(),
                    });
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::MapEnv;

    fn run(text: &str) -> Result<String, String> {
        let env = MapEnv::from([("KEY", "sk-1"), ("EMPTY", "")]);
        expand(text, &env).map_err(|e| e.to_string())
    }

    #[test]
    fn expands_variables_defaults_and_escapes() {
        assert_eq!(run("${KEY}").unwrap(), "sk-1");
        assert_eq!(run("Bearer ${KEY}!").unwrap(), "Bearer sk-1!");
        assert_eq!(run("${NOPE:-fallback}").unwrap(), "fallback");
        assert_eq!(run("${NOPE:-}").unwrap(), "");
        assert_eq!(run("${KEY:-fallback}").unwrap(), "sk-1");
        assert_eq!(
            run("${EMPTY:-fallback}").unwrap(),
            "",
            "set-but-empty is used as is"
        );
        assert_eq!(run("$${KEY} costs $5 $").unwrap(), "${KEY} costs $5 $");
        assert_eq!(run("no vars").unwrap(), "no vars");
        assert_eq!(run("${NOPE:-a:-b}").unwrap(), "a:-b");
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(
            run("${NOPE}").unwrap_err(),
            "environment variable `NOPE` is not set"
        );
        assert_eq!(
            run("x ${KEY").unwrap_err(),
            "invalid variable reference: unclosed `${` in \"x ${KEY\""
        );
        assert_eq!(
            run("${}").unwrap_err(),
            "invalid variable reference: `${}` is not a valid variable name"
        );
        assert_eq!(
            run("${1A}").unwrap_err(),
            "invalid variable reference: `${1A}` is not a valid variable name"
        );
        assert_eq!(
            run("${A B:-x}").unwrap_err(),
            "invalid variable reference: `${A B:-x}` is not a valid variable name"
        );
    }
}
