//! API keys: only a SHA-256 hash and a short display prefix are stored.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Store;
use crate::clock::Timestamp;
use crate::db::{RowExt, with_pool};
use crate::error::StoreError;
use crate::jobs::new_id;

/// Plaintext keys look like `qk_` followed by 64 hex digits (256 random bits).
const KEY_PREFIX: &str = "qk_";
/// Characters of the plaintext kept for display (`qk_1a2b3c4d`).
const DISPLAY_PREFIX_LEN: usize = 11;

/// A key to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    /// A label for people (`ci`, `alice laptop`).
    pub name: String,
    /// What it may do (`jobs:write`, `admin`; the caller's vocabulary).
    pub scopes: Vec<String>,
    /// Rate-limit tier (`free`, `pro`; the caller's vocabulary).
    pub tier: String,
}

/// A stored key (never the plaintext).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Id (UUIDv7).
    pub id: String,
    /// Label.
    pub name: String,
    /// The plaintext's first characters, to recognise it (`qk_1a2b3c4d`).
    pub prefix: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Tier.
    pub tier: String,
    /// Created.
    pub created_at: Timestamp,
    /// Revoked, if it was.
    pub revoked_at: Option<Timestamp>,
}

/// A freshly created key with its plaintext — shown once, never stored. `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct CreatedApiKey {
    /// The stored key.
    pub key: ApiKey,
    /// The plaintext to hand to the user.
    pub plaintext: String,
}

impl fmt::Debug for CreatedApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedApiKey")
            .field("key", &self.key)
            .field("plaintext", &"***")
            .finish()
    }
}

/// The result of checking a presented key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCheck {
    /// Known and not revoked.
    Valid(ApiKey),
    /// Known but revoked.
    Revoked(ApiKey),
    /// Not a key this store issued.
    Unknown,
}

/// Lowercase hex SHA-256 of the plaintext.
pub(crate) fn hash_key(plaintext: &str) -> String {
    let digest = Sha256::digest(plaintext.as_bytes());
    hex(&digest)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn key_from_row<R: RowExt>(row: &R) -> Result<ApiKey, StoreError> {
    let scopes: Vec<String> = serde_json::from_str(&row.string("scopes")?)
        .map_err(|e| StoreError::corrupt("api_keys.scopes", e))?;
    Ok(ApiKey {
        id: row.string("id")?,
        name: row.string("name")?,
        prefix: row.string("prefix")?,
        scopes,
        tier: row.string("tier")?,
        created_at: row.ts("created_at")?,
        revoked_at: row.opt_ts("revoked_at")?,
    })
}

const KEY_COLS: &str = "id, name, prefix, scopes, tier, created_at, revoked_at";

impl Store {
    /// Creates a key; the returned plaintext is the only copy.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidArgument`] for an empty name or tier; [`StoreError::Random`] if
    /// the system has no randomness; a database error.
    pub async fn create_api_key(&self, new: &NewApiKey) -> Result<CreatedApiKey, StoreError> {
        let _turn = self.write_turn().await;
        if new.name.is_empty() {
            return Err(StoreError::invalid("name", "must not be empty"));
        }
        if new.tier.is_empty() {
            return Err(StoreError::invalid("tier", "must not be empty"));
        }
        let mut secret = [0_u8; 32];
        getrandom::fill(&mut secret).map_err(|e| StoreError::Random {
            reason: e.to_string(),
        })?;
        let plaintext = format!("{KEY_PREFIX}{}", hex(&secret));
        let prefix = plaintext[..DISPLAY_PREFIX_LEN].to_owned();
        let now = self.now();
        let key = ApiKey {
            id: new_id(now),
            name: new.name.clone(),
            prefix,
            scopes: new.scopes.clone(),
            tier: new.tier.clone(),
            created_at: now,
            revoked_at: None,
        };
        let scopes = serde_json::Value::from(key.scopes.clone()).to_string();
        with_pool!(&self.pool, p, d => {
            sqlx::query(
                "INSERT INTO api_keys (id, name, prefix, key_hash, scopes, tier, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&key.id)
            .bind(&key.name)
            .bind(&key.prefix)
            .bind(hash_key(&plaintext))
            .bind(scopes)
            .bind(&key.tier)
            .bind(now.as_millis())
            .execute(p)
            .await
            .map_err(StoreError::db("create api key"))?;
        });
        Ok(CreatedApiKey { key, plaintext })
    }

    /// Checks a presented plaintext key by its hash.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn verify_api_key(&self, plaintext: &str) -> Result<KeyCheck, StoreError> {
        if !plaintext.starts_with(KEY_PREFIX) {
            return Ok(KeyCheck::Unknown);
        }
        let hash = hash_key(plaintext);
        let key = with_pool!(&self.pool, p, d => {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {KEY_COLS} FROM api_keys WHERE key_hash = $1"
            )))
            .bind(hash)
            .fetch_optional(p)
            .await
            .map_err(StoreError::db("verify api key"))?;
            row.as_ref().map(key_from_row).transpose()?
        });
        Ok(match key {
            Some(k) if k.revoked_at.is_some() => KeyCheck::Revoked(k),
            Some(k) => KeyCheck::Valid(k),
            None => KeyCheck::Unknown,
        })
    }

    /// Revokes a key; returns `false` if it was unknown or already revoked (the first
    /// revocation time is kept).
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn revoke_api_key(&self, id: &str) -> Result<bool, StoreError> {
        let _turn = self.write_turn().await;
        let now = self.now();
        with_pool!(&self.pool, p, d => {
            let n = sqlx::query(
                "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            )
            .bind(id)
            .bind(now.as_millis())
            .execute(p)
            .await
            .map_err(StoreError::db("revoke api key"))?
            .rows_affected();
            Ok(n > 0)
        })
    }

    /// All keys, oldest first.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        with_pool!(&self.pool, p, d => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {KEY_COLS} FROM api_keys ORDER BY created_at, id"
            )))
            .fetch_all(p)
            .await
            .map_err(StoreError::db("list api keys"))?;
            rows.iter().map(key_from_row).collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn created_key_debug_hides_plaintext() {
        let k = CreatedApiKey {
            key: ApiKey {
                id: "i".into(),
                name: "n".into(),
                prefix: "qk_12345678".into(),
                scopes: vec![],
                tier: "t".into(),
                created_at: Timestamp::from_millis(0),
                revoked_at: None,
            },
            plaintext: "qk_secretsecret".into(),
        };
        let dbg = format!("{k:?}");
        assert!(!dbg.contains("secretsecret"), "{dbg}");
    }
}
