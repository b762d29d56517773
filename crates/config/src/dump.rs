//! Rendering the effective configuration as YAML (`config show`).

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::de::{Resolved, resolve};
use crate::error::{ConfigError, ErrorKind};

/// Renders `config` as block-style YAML that [`Loader`](crate::Loader) reads back to an equal
/// value, with map keys sorted. [`Secret`](crate::Secret) fields serialize as `<redacted>`, so the output is safe to
/// print or log.
///
/// ```
/// #[derive(serde::Serialize)]
/// struct Cfg { port: u16, key: quorum_config::Secret, models: Vec<String> }
/// let cfg = Cfg { port: 80, key: quorum_config::Secret::new("sk-1"), models: vec!["a".into()] };
/// assert_eq!(quorum_config::dump(&cfg)?, "key: <redacted>\nmodels:\n  - a\nport: 80\n");
/// # Ok::<(), quorum_config::ConfigError>(())
/// ```
///
/// # Errors
///
/// When `config`'s `Serialize` impl fails or produces something YAML-as-JSON cannot hold
/// (a map whose keys are not strings or numbers).
pub fn dump<T: Serialize + ?Sized>(config: &T) -> Result<String, ConfigError> {
    let value = serde_json::to_value(config).map_err(|e| {
        ConfigError::new(ErrorKind::Dump {
            message: e.to_string(),
        })
    })?;
    let mut out = String::new();
    match &value {
        Value::Object(map) if !map.is_empty() => block(&value, 0, false, &mut out),
        Value::Array(items) if !items.is_empty() => block(&value, 0, false, &mut out),
        other => {
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
    Ok(out)
}

/// Writes a non-empty map or list at `indent`; `skip_pad` when the first line continues a `- `.
fn block(value: &Value, indent: usize, mut skip_pad: bool, out: &mut String) {
    let pad = |out: &mut String, skip: &mut bool| {
        if !std::mem::take(skip) {
            out.push_str(&" ".repeat(indent));
        }
    };
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                pad(out, &mut skip_pad);
                out.push_str(&scalar(key));
                out.push(':');
                nested(value, indent + 2, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                pad(out, &mut skip_pad);
                match item {
                    Value::Object(map) if !map.is_empty() => {
                        out.push_str("- ");
                        block(item, indent + 2, true, out);
                    }
                    Value::Array(inner) if !inner.is_empty() => {
                        out.push_str("- ");
                        block(item, indent + 2, true, out);
                    }
                    other => {
                        let _ = writeln!(out, "- {}", inline(other));
                    }
                }
            }
        }
        _ => {}
    }
}

/// The value after `key:` or `-`.
fn nested(value: &Value, indent: usize, out: &mut String) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            block(value, indent, false, out);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            block(value, indent, false, out);
        }
        other => {
            let _ = writeln!(out, " {}", inline(other));
        }
    }
}

fn inline(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        // `$` is doubled so that `${...}` expansion on reload gives the same string back.
        Value::String(s) => scalar(&s.replace('$', "$$")),
        Value::Array(_) => "[]".to_owned(),
        Value::Object(_) => "{}".to_owned(),
    }
}

/// A string as a YAML scalar: plain when it would read back as the same string, otherwise
/// double-quoted (a JSON string is a valid YAML double-quoted scalar).
fn scalar(s: &str) -> String {
    let ambiguous = resolve(s) != Resolved::Str
        || ["y", "n", "yes", "no", "on", "off", "<<"]
            .iter()
            .any(|w| w.eq_ignore_ascii_case(s));
    let special_start = s.starts_with(|c: char| "-?:,[]{}#&*!|>'\"%@`$ \t".contains(c));
    let special_inside = s.ends_with([' ', '\t', ':'])
        || s.contains(": ")
        || s.contains(" #")
        || s.chars().any(char::is_control);
    if ambiguous || special_start || special_inside {
        serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn block_layout() {
        let value = json!({
            "server": {"port": 8080, "tags": ["a", "b"], "empty": {}},
            "providers": [{"name": "x", "models": []}, {"name": "y"}],
            "nested": [[1, 2], []],
            "none": null,
            "ratio": 0.5,
        });
        let text = dump(&value).unwrap();
        let expected = "\
nested:
  - - 1
    - 2
  - []
none: null
providers:
  - models: []
    name: x
  - name: \"y\"
ratio: 0.5
server:
  empty: {}
  port: 8080
  tags:
    - a
    - b
";
        assert_eq!(text, expected);
    }

    #[test]
    fn quotes_only_when_needed() {
        for (s, shown) in [
            ("plain", "plain"),
            ("http://x:80/a", "http://x:80/a"),
            ("", "\"\""),
            ("true", "\"true\""),
            ("null", "\"null\""),
            ("~", "\"~\""),
            ("12", "\"12\""),
            ("1.5", "\"1.5\""),
            ("yes", "\"yes\""),
            ("a: b", "\"a: b\""),
            ("a #b", "\"a #b\""),
            ("- x", "\"- x\""),
            ("$X", "\"$X\""),
            (" lead", "\" lead\""),
            ("line\nbreak", "\"line\\nbreak\""),
            ("<redacted>", "<redacted>"),
        ] {
            assert_eq!(scalar(s), shown, "{s:?}");
        }
    }

    #[test]
    fn dollars_are_escaped_in_values_only() {
        assert_eq!(dump(&json!({"a$": "${X}"})).unwrap(), "a$: \"$${X}\"\n");
    }

    #[test]
    fn scalars_and_failures() {
        assert_eq!(dump(&5).unwrap(), "5\n");
        assert_eq!(dump(&json!({})).unwrap(), "{}\n");
        let mut bad = std::collections::BTreeMap::new();
        bad.insert(vec![1], 1);
        let err = dump(&bad).unwrap_err();
        assert!(
            err.to_string().starts_with("cannot render config: "),
            "{err}"
        );
    }
}
