//! Provider factories and the explicit registry that builds providers from config.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::error::LlmError;
use crate::provider::Provider;

/// Builds providers of one kind from their raw configuration section.
///
/// Each provider crate exports one; a service registers the ones it wants in a
/// [`ProviderRegistry`]. The raw section is a [`serde_json::Value`] the factory deserializes into
/// its own typed, `deny_unknown_fields` config (usually with [`parse_config`]).
pub trait ProviderFactory: Send + Sync {
    /// The kind this factory builds (`"openai"`), matched against a config's `kind`.
    fn kind(&self) -> &str;

    /// Builds the provider instance called `name` from its configuration section.
    ///
    /// # Errors
    ///
    /// [`LlmError::Config`] naming the bad field when the section is invalid.
    fn build(&self, name: &str, config: serde_json::Value) -> Result<Arc<dyn Provider>, LlmError>;
}

/// Deserializes a provider's raw config section into its typed config, with errors that name
/// the field's path (`timeout.connect: invalid duration "soon"`).
///
/// # Errors
///
/// [`LlmError::Config`] for `name`, naming the field.
pub fn parse_config<T: DeserializeOwned>(
    name: &str,
    config: serde_json::Value,
) -> Result<T, LlmError> {
    serde_path_to_error::deserialize(config).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = if path.is_empty() || path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        };
        LlmError::Config {
            name: name.to_owned(),
            message,
            source: Some(Box::new(inner)),
        }
    })
}

/// The factories a service knows, by kind: a plain value, filled explicitly.
///
/// No global state and no inventory magic: a service registers the factories it was built with
/// (behind its features), an embedder registers its own the same way.
#[derive(Clone, Default)]
pub struct ProviderRegistry {
    factories: BTreeMap<String, Arc<dyn ProviderFactory>>,
}

impl fmt::Debug for ProviderRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderRegistry")
            .field("kinds", &self.kinds())
            .finish()
    }
}

impl ProviderRegistry {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a factory under its [`ProviderFactory::kind`], replacing any earlier one of the
    /// same kind (which is returned).
    pub fn register(
        &mut self,
        factory: Arc<dyn ProviderFactory>,
    ) -> Option<Arc<dyn ProviderFactory>> {
        self.factories.insert(factory.kind().to_owned(), factory)
    }

    /// Registers a factory, builder style.
    #[must_use]
    pub fn with(mut self, factory: impl ProviderFactory + 'static) -> Self {
        self.register(Arc::new(factory));
        self
    }

    /// The registered kinds, sorted.
    #[must_use]
    pub fn kinds(&self) -> Vec<String> {
        self.factories.keys().cloned().collect()
    }

    /// The factory for `kind`, if registered.
    #[must_use]
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn ProviderFactory>> {
        self.factories.get(kind)
    }

    /// Builds the provider `name` of `kind` from its raw config section.
    ///
    /// # Errors
    ///
    /// [`LlmError::UnknownKind`] listing the known kinds, or the factory's
    /// [`LlmError::Config`].
    pub fn build(
        &self,
        kind: &str,
        name: &str,
        config: serde_json::Value,
    ) -> Result<Arc<dyn Provider>, LlmError> {
        let factory = self.get(kind).ok_or_else(|| LlmError::UnknownKind {
            kind: kind.to_owned(),
            known: self.kinds(),
        })?;
        factory.build(name, config)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::error::ErrorKind;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Section {
        base_url: String,
        #[serde(default)]
        timeout: Timeout,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Timeout {
        connect_ms: u64,
    }

    struct Failing;

    impl ProviderFactory for Failing {
        fn kind(&self) -> &str {
            "failing"
        }

        fn build(
            &self,
            name: &str,
            config: serde_json::Value,
        ) -> Result<Arc<dyn Provider>, LlmError> {
            let _section: Section = parse_config(name, config)?;
            Err(LlmError::Config {
                name: name.to_owned(),
                message: "never builds".into(),
                source: None,
            })
        }
    }

    #[test]
    fn config_errors_name_the_field_path() {
        let err = parse_config::<Section>(
            "p",
            serde_json::json!({"base_url": "x", "timeout": {"connect_ms": "soon"}}),
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let text = err.to_string();
        assert!(
            text.starts_with("invalid config for provider \"p\": timeout.connect_ms: invalid type"),
            "{text}"
        );

        let unknown = parse_config::<Section>("p", serde_json::json!({"base_url": "x", "bse": 1}))
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("unknown field `bse`"), "{unknown}");

        let missing = parse_config::<Section>("p", serde_json::json!({}))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("missing field `base_url`"), "{missing}");
    }

    #[test]
    fn registry_lists_known_kinds_for_an_unknown_kind() {
        let registry = ProviderRegistry::new().with(Failing);
        assert_eq!(registry.kinds(), ["failing"]);
        let Err(err) = registry.build("openai", "main", serde_json::json!({})) else {
            panic!("built an unknown kind");
        };
        assert_eq!(
            err.to_string(),
            "unknown provider kind \"openai\" (known kinds: failing)"
        );
        let Err(err) = registry.build("failing", "main", serde_json::json!({"base_url": "u"}))
        else {
            panic!("failing factory built");
        };
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(format!("{registry:?}").contains("failing"));
    }
}
