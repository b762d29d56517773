//! `StoreConfig`: the store's typed configuration section.

use quorum_config::{ByteSize, Duration};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::maintenance::RetentionPolicy;

/// Configuration of the store (the database URL is passed separately to
/// [`Store::connect`](crate::Store::connect), usually from `DATABASE_URL`).
///
/// ```yaml
/// schema: quorum          # PostgreSQL only: all tables live in this schema
/// pool:
///   max_connections: 20
///   acquire_timeout: 5s
/// sqlite:
///   busy_timeout: 5s
/// compression:
///   enabled: true
///   threshold: 4KiB
/// retention:
///   completed_jobs: 7d
///   usage_records: null   # keep forever
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// PostgreSQL schema holding every table (created if missing; `SET search_path` on each
    /// pooled connection). `None` uses the server's default search path. Ignored for SQLite.
    /// Must be a plain identifier: ASCII letters, digits and `_`, not starting with a digit,
    /// at most 63 characters.
    pub schema: Option<String>,
    /// Connection pool sizes and timeouts.
    pub pool: PoolConfig,
    /// SQLite-only settings.
    pub sqlite: SqliteConfig,
    /// Compression of large message bodies.
    pub compression: CompressionConfig,
    /// What [`Store::cleanup`](crate::Store::cleanup) deletes, when the caller passes this.
    pub retention: RetentionPolicy,
}

/// Connection pool settings; unset sizes take a per-backend default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Most connections open at once. Default: 4 for SQLite (one writer at a time anyway),
    /// 10 for PostgreSQL; always 1 for an in-memory SQLite database.
    pub max_connections: Option<u32>,
    /// Connections kept open when idle. Default: 1 for SQLite, 0 for PostgreSQL.
    pub min_connections: Option<u32>,
    /// How long a call waits for a free connection before failing (retryably). Default 10s.
    pub acquire_timeout: Duration,
    /// Idle connections above `min_connections` are closed after this long. Default 10m.
    pub idle_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_connections: None,
            min_connections: None,
            acquire_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(600),
        }
    }
}

/// SQLite-only settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqliteConfig {
    /// How long a writer waits for another to finish before failing with "database is
    /// locked" (retryable). Default 5s.
    pub busy_timeout: Duration,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// Compression of message bodies larger than a threshold (LZ4, pure Rust). Reading is
/// transparent and works whatever the setting: compressed and plain rows can be mixed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompressionConfig {
    /// Compress new bodies above `threshold`. Default off.
    pub enabled: bool,
    /// Bodies at least this large are compressed (when that makes them smaller). Default 4KiB.
    pub threshold: ByteSize,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            threshold: ByteSize::new(4096),
        }
    }
}

impl StoreConfig {
    /// Checks ranges that serde cannot.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidConfig`] naming the field.
    pub fn validate(&self) -> Result<(), StoreError> {
        if let Some(schema) = &self.schema {
            validate_identifier(schema).map_err(|reason| StoreError::InvalidConfig {
                field: "schema",
                reason,
            })?;
        }
        if self.pool.max_connections == Some(0) {
            return Err(StoreError::InvalidConfig {
                field: "pool.max_connections",
                reason: "must be at least 1".to_owned(),
            });
        }
        if let (Some(min), Some(max)) = (self.pool.min_connections, self.pool.max_connections)
            && min > max
        {
            return Err(StoreError::InvalidConfig {
                field: "pool.min_connections",
                reason: format!("{min} is more than pool.max_connections ({max})"),
            });
        }
        if self.pool.acquire_timeout.as_std().is_zero() {
            return Err(StoreError::InvalidConfig {
                field: "pool.acquire_timeout",
                reason: "must be more than 0s".to_owned(),
            });
        }
        Ok(())
    }
}

/// Checks a PostgreSQL schema name is a plain identifier (so it can be quoted safely).
pub(crate) fn validate_identifier(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return Err("must not be empty".to_owned());
    };
    if name.len() > 63 {
        return Err(format!("{name:?} is longer than 63 characters"));
    }
    if !(first.is_ascii_alphabetic() || first == '_')
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(format!(
            "{name:?} is not a plain identifier (ASCII letters, digits and _, not starting with a digit)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        StoreConfig::default().validate().unwrap();
    }

    #[test]
    fn deserializes_typed_values_and_rejects_unknown_fields() {
        let c: StoreConfig = serde_json::from_str(
            r#"{"schema":"q1","pool":{"max_connections":3,"acquire_timeout":"2s"},"compression":{"enabled":true,"threshold":"1KiB"}}"#,
        )
        .unwrap();
        assert_eq!(c.pool.max_connections, Some(3));
        assert_eq!(
            c.pool.acquire_timeout.as_std(),
            std::time::Duration::from_secs(2)
        );
        assert_eq!(c.compression.threshold.bytes(), 1024);
        let e = serde_json::from_str::<StoreConfig>(r#"{"pool":{"max_conns":3}}"#).unwrap_err();
        assert!(e.to_string().contains("max_conns"), "{e}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let mut c = StoreConfig {
            schema: Some("bad-name; drop".to_owned()),
            ..StoreConfig::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("invalid store config: schema:"), "{e}");
        c.schema = Some("1abc".to_owned());
        assert!(c.validate().is_err());
        c.schema = Some("ok_1".to_owned());
        c.pool.max_connections = Some(0);
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("pool.max_connections")
        );
        c.pool.max_connections = Some(2);
        c.pool.min_connections = Some(3);
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("pool.min_connections: 3 is more than")
        );
    }
}
