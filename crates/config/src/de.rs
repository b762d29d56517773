//! A `serde::Deserializer` over [`Node`] that knows each value's key path and origin, so every
//! error — serde's own or one raised by a field's `Deserialize` impl — says where it happened.
//!
//! Typing rules: quoted scalars are strings when the target is self-describing
//! (`deserialize_any`); plain scalars resolve like YAML 1.2's core schema (`null`/`~`/empty,
//! `true`/`false`, integers incl. `0x`/`0o`, floats incl. `.inf`/`.nan`). When the target asks
//! for a specific type, any scalar's text is parsed as that type, so `"9000"` fills a `u16` and
//! `123` fills a `String`. A null (or empty) value fills an `Option` with `None` and a struct, map
//! or list with its empty form (so `server:` with everything commented out means defaults).

use serde::de::{self, DeserializeSeed, Error as _, Unexpected, Visitor};

use crate::error::{ConfigError, KeyPath, Segment};
use crate::node::{Node, NodeKind, is_null_text};

/// A plain scalar's resolved type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Resolved {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str,
}

/// Resolves a plain scalar per the YAML 1.2 core schema.
pub(crate) fn resolve(text: &str) -> Resolved {
    if is_null_text(text) {
        return Resolved::Null;
    }
    match text {
        "true" | "True" | "TRUE" => return Resolved::Bool(true),
        "false" | "False" | "FALSE" => return Resolved::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Resolved::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Resolved::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Resolved::Float(f64::NAN),
        _ => {}
    }
    if let Some(int) = resolve_int(text) {
        return int;
    }
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    let mantissa = mantissa.strip_prefix(['-', '+']).unwrap_or(mantissa);
    let digits = mantissa.replacen('.', "", 1);
    let mantissa_ok = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
    });
    match text.parse::<f64>() {
        Ok(float) if mantissa_ok && exponent_ok => Resolved::Float(float),
        _ => Resolved::Str,
    }
}

fn resolve_int(text: &str) -> Option<Resolved> {
    let (negative, body) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (radix, digits) = if let Some(hex) = body.strip_prefix("0x") {
        (16, hex)
    } else if let Some(oct) = body.strip_prefix("0o") {
        (8, oct)
    } else {
        (10, body)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    // Too large for 64 bits: YAML still calls it an integer; we give it to the target as a float.
    let magnitude = u128::from_str_radix(digits, radix).ok()?;
    Some(
        match (negative, u64::try_from(magnitude), i64::try_from(magnitude)) {
            (false, Ok(u), _) => Resolved::Uint(u),
            (true, _, Ok(i)) => Resolved::Int(-i),
            (true, _, Err(_)) if magnitude == 1 << 63 => Resolved::Int(i64::MIN),
            #[expect(
                clippy::cast_precision_loss,
                reason = "only used to report the value in an error"
            )]
            _ => Resolved::Float(if negative {
                -(magnitude as f64)
            } else {
                magnitude as f64
            }),
        },
    )
}

/// Deserializes `node`, whose key path is `path`.
pub(crate) struct NodeDe<'a> {
    node: &'a Node,
    path: KeyPath,
    /// Map keys are always their text, never null or a number, for self-describing targets.
    is_key: bool,
}

impl<'a> NodeDe<'a> {
    pub(crate) fn new(node: &'a Node, path: KeyPath) -> Self {
        Self {
            node,
            path,
            is_key: false,
        }
    }

    fn child(&self, node: &'a Node, segment: Segment) -> Self {
        Self::new(node, self.path.join(segment))
    }

    fn locate(&self, err: ConfigError) -> ConfigError {
        err.located(&self.path, self.node.origin.as_ref())
    }

    fn unexpected(&self) -> Unexpected<'a> {
        match &self.node.kind {
            NodeKind::Scalar { text, quoted: true } => Unexpected::Str(text),
            NodeKind::Scalar {
                text,
                quoted: false,
            } => match resolve(text) {
                Resolved::Null => Unexpected::Other("null"),
                Resolved::Bool(b) => Unexpected::Bool(b),
                Resolved::Int(i) => Unexpected::Signed(i),
                Resolved::Uint(u) => Unexpected::Unsigned(u),
                Resolved::Float(f) => Unexpected::Float(f),
                Resolved::Str => Unexpected::Str(text),
            },
            NodeKind::Seq(_) => Unexpected::Seq,
            NodeKind::Map(_) => Unexpected::Map,
        }
    }

    fn any<'de, V: Visitor<'de>>(&self, visitor: V) -> Result<V::Value, ConfigError> {
        match &self.node.kind {
            NodeKind::Scalar { text, quoted } if *quoted || self.is_key => visitor.visit_str(text),
            NodeKind::Scalar { text, .. } => match resolve(text) {
                Resolved::Null => visitor.visit_unit(),
                Resolved::Bool(b) => visitor.visit_bool(b),
                Resolved::Int(i) => visitor.visit_i64(i),
                Resolved::Uint(u) => visitor.visit_u64(u),
                Resolved::Float(f) => visitor.visit_f64(f),
                Resolved::Str => visitor.visit_str(text),
            },
            NodeKind::Seq(items) => visitor.visit_seq(SeqAccess {
                de: self,
                items: items.iter().enumerate(),
            }),
            NodeKind::Map(entries) => visitor.visit_map(MapAccess {
                de: self,
                entries: entries.iter(),
                value: None,
            }),
        }
    }

    /// A number: any scalar's text is resolved, quoted or not.
    fn number<'de, V: Visitor<'de>>(&self, visitor: V) -> Result<V::Value, ConfigError> {
        let NodeKind::Scalar { text, .. } = &self.node.kind else {
            return self.any(visitor);
        };
        match resolve(text.trim()) {
            Resolved::Int(i) => visitor.visit_i64(i),
            Resolved::Uint(u) => visitor.visit_u64(u),
            Resolved::Float(f) => visitor.visit_f64(f),
            _ => Err(ConfigError::invalid_type(self.unexpected(), &visitor)),
        }
    }

    fn string<'de, V: Visitor<'de>>(&self, visitor: V) -> Result<V::Value, ConfigError> {
        match &self.node.kind {
            NodeKind::Scalar { .. } if self.node.is_null() && !self.is_key => Err(
                ConfigError::invalid_type(Unexpected::Other("null"), &visitor),
            ),
            NodeKind::Scalar { text, .. } => visitor.visit_str(text),
            _ => self.any(visitor),
        }
    }
}

macro_rules! forward {
    ($($method:ident => $via:ident,)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
            self.$via(visitor).map_err(|e| self.locate(e))
        }
    )*};
}

impl<'de> de::Deserializer<'de> for NodeDe<'_> {
    type Error = ConfigError;

    forward! {
        deserialize_any => any,
        deserialize_i8 => number,
        deserialize_i16 => number,
        deserialize_i32 => number,
        deserialize_i64 => number,
        deserialize_u8 => number,
        deserialize_u16 => number,
        deserialize_u32 => number,
        deserialize_u64 => number,
        deserialize_f32 => number,
        deserialize_f64 => number,
        deserialize_char => string,
        deserialize_str => string,
        deserialize_string => string,
        deserialize_bytes => string,
        deserialize_byte_buf => string,
        deserialize_identifier => string,
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        let result = match &self.node.kind {
            NodeKind::Scalar { text, .. } => match resolve(text.trim()) {
                Resolved::Bool(b) => visitor.visit_bool(b),
                _ => Err(ConfigError::invalid_type(self.unexpected(), &visitor)),
            },
            _ => Err(ConfigError::invalid_type(self.unexpected(), &visitor)),
        };
        result.map_err(|e| self.locate(e))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        if self.node.is_null() {
            visitor.visit_none().map_err(|e| self.locate(e))
        } else {
            let (path, origin) = (self.path.clone(), self.node.origin.clone());
            visitor
                .visit_some(self)
                .map_err(|e| e.located(&path, origin.as_ref()))
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        let result = if self.node.is_null() {
            visitor.visit_unit()
        } else {
            Err(ConfigError::invalid_type(self.unexpected(), &visitor))
        };
        result.map_err(|e| self.locate(e))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        let (path, origin) = (self.path.clone(), self.node.origin.clone());
        visitor
            .visit_newtype_struct(self)
            .map_err(|e| e.located(&path, origin.as_ref()))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        let result = if self.node.is_null() {
            visitor.visit_seq(SeqAccess {
                de: &self,
                items: [].iter().enumerate(),
            })
        } else {
            match &self.node.kind {
                NodeKind::Seq(_) => self.any(visitor),
                _ => Err(ConfigError::invalid_type(self.unexpected(), &visitor)),
            }
        };
        result.map_err(|e| self.locate(e))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        let result = if self.node.is_null() {
            visitor.visit_map(MapAccess {
                de: &self,
                entries: [].iter(),
                value: None,
            })
        } else {
            match &self.node.kind {
                NodeKind::Map(entries) => visitor.visit_map(MapAccess {
                    de: &self,
                    entries: entries.iter(),
                    value: None,
                }),
                _ => Err(ConfigError::invalid_type(self.unexpected(), &visitor)),
            }
        };
        result.map_err(|e| self.locate(e))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        let result = match &self.node.kind {
            NodeKind::Scalar { .. } if !self.node.is_null() => visitor.visit_enum(EnumAccess {
                de: &self,
                value: None,
            }),
            NodeKind::Map(entries) if entries.len() == 1 => {
                let (key, value) = (&entries[0].0, &entries[0].1);
                let key_de = NodeDe {
                    node: key,
                    path: self.path.clone(),
                    is_key: true,
                };
                visitor.visit_enum(EnumAccess {
                    de: &key_de,
                    value: Some(value),
                })
            }
            NodeKind::Map(entries) => Err(ConfigError::custom(format_args!(
                "expected a variant name or a map with exactly one key naming the variant, found a map with {} keys",
                entries.len()
            ))),
            _ => Err(ConfigError::invalid_type(self.unexpected(), &visitor)),
        };
        result.map_err(|e| self.locate(e))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        visitor.visit_unit()
    }
}

struct SeqAccess<'p, 'a> {
    de: &'p NodeDe<'a>,
    items: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'_, '_> {
    type Error = ConfigError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, ConfigError> {
        match self.items.next() {
            Some((index, item)) => {
                // Locating here too catches errors raised after the inner deserializer returned
                // (`#[serde(try_from)]`, validating newtypes).
                let de = self.de.child(item, Segment::Index(index));
                let (path, origin) = (de.path.clone(), &item.origin);
                seed.deserialize(de)
                    .map(Some)
                    .map_err(|e| e.located(&path, origin.as_ref()))
            }
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapAccess<'p, 'a> {
    de: &'p NodeDe<'a>,
    entries: std::slice::Iter<'a, (Node, Node)>,
    value: Option<&'a (Node, Node)>,
}

impl<'de> de::MapAccess<'de> for MapAccess<'_, '_> {
    type Error = ConfigError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ConfigError> {
        let Some(entry) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(entry);
        let mut key = self.de.child(&entry.0, entry.0.key_segment());
        key.is_key = true;
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ConfigError> {
        let (key, value) = self
            .value
            .take()
            .ok_or_else(|| ConfigError::custom("value requested before its key"))?;
        let de = self.de.child(value, key.key_segment());
        let path = de.path.clone();
        seed.deserialize(de)
            .map_err(|e| e.located(&path, value.origin.as_ref()))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// An enum written as `variant` (unit) or `{variant: value}`; `de` is the variant name's node.
struct EnumAccess<'p, 'a> {
    de: &'p NodeDe<'a>,
    value: Option<&'a Node>,
}

impl<'de, 'p, 'a> de::EnumAccess<'de> for EnumAccess<'p, 'a> {
    type Error = ConfigError;
    type Variant = VariantAccess<'a>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, VariantAccess<'a>), ConfigError> {
        let name = NodeDe {
            node: self.de.node,
            path: self.de.path.clone(),
            is_key: true,
        };
        let variant = seed.deserialize(name)?;
        let value = self
            .value
            .map(|value| self.de.child(value, self.de.node.key_segment()));
        Ok((variant, VariantAccess { value }))
    }
}

struct VariantAccess<'a> {
    /// `None` for the bare-name form.
    value: Option<NodeDe<'a>>,
}

impl<'de> de::VariantAccess<'de> for VariantAccess<'_> {
    type Error = ConfigError;

    fn unit_variant(self) -> Result<(), ConfigError> {
        match self.value {
            None => Ok(()),
            Some(de) => de::Deserializer::deserialize_unit(de, de::IgnoredAny).map(|_| ()),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, ConfigError> {
        match self.value {
            Some(de) => {
                let (path, origin) = (de.path.clone(), de.node.origin.clone());
                seed.deserialize(de)
                    .map_err(|e| e.located(&path, origin.as_ref()))
            }
            None => Err(ConfigError::invalid_type(
                Unexpected::UnitVariant,
                &"a map naming a newtype variant",
            )),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        match self.value {
            Some(de) => de::Deserializer::deserialize_seq(de, visitor),
            None => Err(ConfigError::invalid_type(
                Unexpected::UnitVariant,
                &"a map naming a tuple variant",
            )),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        match self.value {
            Some(de) => de::Deserializer::deserialize_map(de, visitor),
            None => Err(ConfigError::invalid_type(
                Unexpected::UnitVariant,
                &"a map naming a struct variant",
            )),
        }
    }
}
