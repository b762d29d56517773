//! Conversations: sessions, their messages (optionally compressed) and summaries.

use serde::{Deserialize, Serialize};

use crate::Store;
use crate::clock::Timestamp;
use crate::db::{RowExt, with_pool};
use crate::error::StoreError;
use crate::jobs::{check_id, check_limit, new_id};

/// A conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Id (UUIDv7 unless chosen by the creator).
    pub id: String,
    /// Who it belongs to.
    pub owner: Option<String>,
    /// Created.
    pub created_at: Timestamp,
    /// Last message appended (idle-session retention counts from here).
    pub updated_at: Timestamp,
}

/// A session in a listing, with its size and first message (for titles).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummaryRow {
    /// The session.
    pub session: Session,
    /// Messages it holds.
    pub message_count: u64,
    /// Its first message, if any.
    pub first_message: Option<Message>,
}

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Role {
    /// Instructions.
    System,
    /// The person.
    User,
    /// A model.
    Assistant,
    /// A tool's output.
    Tool,
}

impl Role {
    /// The stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
            Self::Tool => "tool",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "system" => Self::System,
            "user" => Self::User,
            "assistant" => Self::Assistant,
            "tool" => Self::Tool,
            other => {
                return Err(StoreError::corrupt(
                    "messages.role",
                    format!("unknown role {other:?}"),
                ));
            }
        })
    }
}

/// A message to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: String,
    /// Its token count, when known.
    pub tokens: Option<u32>,
    /// The model that wrote it (assistant turns).
    pub model: Option<String>,
}

impl NewMessage {
    /// A message with no token count or model.
    #[must_use]
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tokens: None,
            model: None,
        }
    }
}

/// A stored message (decompressed if it was stored compressed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Row id: increasing in append order; the pagination cursor.
    pub id: i64,
    /// The session.
    pub session_id: String,
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: String,
    /// Token count.
    pub tokens: Option<u32>,
    /// Model.
    pub model: Option<String>,
    /// When appended.
    pub created_at: Timestamp,
}

/// A stored summary of the start of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Row id.
    pub id: i64,
    /// The session.
    pub session_id: String,
    /// The summary text.
    pub summary: String,
    /// How many messages (from the start) it covers.
    pub message_count: u64,
    /// When written.
    pub created_at: Timestamp,
}

/// Compresses `content` if enabled and large enough and if it actually shrinks.
pub(crate) fn encode_body(
    content: &str,
    enabled: bool,
    threshold: u64,
) -> (Option<&str>, Option<Vec<u8>>) {
    let len = u64::try_from(content.len()).unwrap_or(u64::MAX);
    if enabled && len >= threshold {
        let packed = lz4_flex::compress_prepend_size(content.as_bytes());
        if packed.len() < content.len() {
            return (None, Some(packed));
        }
    }
    (Some(content), None)
}

pub(crate) fn decode_body(
    plain: Option<String>,
    packed: Option<Vec<u8>>,
) -> Result<String, StoreError> {
    match (plain, packed) {
        (Some(text), None) => Ok(text),
        (None, Some(bytes)) => {
            let raw = lz4_flex::decompress_size_prepended(&bytes)
                .map_err(|e| StoreError::corrupt("messages.content_lz4", e))?;
            String::from_utf8(raw).map_err(|e| StoreError::corrupt("messages.content_lz4", e))
        }
        _ => Err(StoreError::corrupt(
            "messages.content",
            "exactly one of content and content_lz4 must be set",
        )),
    }
}

fn session_from_row<R: RowExt>(row: &R) -> Result<Session, StoreError> {
    Ok(Session {
        id: row.string("id")?,
        owner: row.opt_string("owner")?,
        created_at: row.ts("created_at")?,
        updated_at: row.ts("updated_at")?,
    })
}

fn message_from_row<R: RowExt>(row: &R) -> Result<Message, StoreError> {
    Ok(Message {
        id: row.i64("id")?,
        session_id: row.string("session_id")?,
        role: Role::parse(&row.string("role")?)?,
        content: decode_body(row.opt_string("content")?, row.opt_bytes("content_lz4")?)?,
        tokens: row
            .opt_i64("tokens")?
            .map(|t| u32::try_from(t).unwrap_or(u32::MAX)),
        model: row.opt_string("model")?,
        created_at: row.ts("created_at")?,
    })
}

fn summary_from_row<R: RowExt>(row: &R) -> Result<Summary, StoreError> {
    Ok(Summary {
        id: row.i64("id")?,
        session_id: row.string("session_id")?,
        summary: row.string("summary")?,
        message_count: u64::try_from(row.i64("message_count")?).unwrap_or(0),
        created_at: row.ts("created_at")?,
    })
}

impl Store {
    /// Creates a session (`id` `None` generates a UUIDv7). Creating one that exists returns
    /// it unchanged (idempotent).
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidArgument`] for an empty id; a database error.
    pub async fn create_session(
        &self,
        id: Option<&str>,
        owner: Option<&str>,
    ) -> Result<Session, StoreError> {
        let _turn = self.write_turn().await;
        let now = self.now();
        let id = match id {
            Some(id) => {
                check_id("session_id", id)?;
                id.to_owned()
            }
            None => new_id(now),
        };
        with_pool!(&self.pool, p, d => {
            sqlx::query(
                "INSERT INTO sessions (id, owner, created_at, updated_at) VALUES ($1, $2, $3, $3) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(&id)
            .bind(owner)
            .bind(now.as_millis())
            .execute(p)
            .await
            .map_err(StoreError::db("create session"))?;
        });
        self.get_session(&id).await?.ok_or(StoreError::NotFound {
            entity: "session",
            id,
        })
    }

    /// Reads a session.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn get_session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        with_pool!(&self.pool, p, d => {
            let row = sqlx::query("SELECT id, owner, created_at, updated_at FROM sessions WHERE id = $1")
                .bind(id)
                .fetch_optional(p)
                .await
                .map_err(StoreError::db("get session"))?;
            row.as_ref().map(session_from_row).transpose()
        })
    }

    /// Appends a message to a session (compressing a large body when enabled) and marks the
    /// session active now.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] if the session does not exist; a database error.
    pub async fn append_message(
        &self,
        session_id: &str,
        message: &NewMessage,
    ) -> Result<Message, StoreError> {
        let _turn = self.write_turn().await;
        let now = self.now();
        let (plain, packed) = encode_body(
            &message.content,
            self.settings.compression.enabled,
            self.settings.compression.threshold.bytes(),
        );
        let op = "append message";
        let id = with_pool!(&self.pool, p, d => {
            let mut tx = p.begin_with(d.begin_write()).await.map_err(StoreError::db(op))?;
            let touched = sqlx::query("UPDATE sessions SET updated_at = $2 WHERE id = $1")
                .bind(session_id)
                .bind(now.as_millis())
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db(op))?;
            if touched.rows_affected() == 0 {
                return Err(StoreError::NotFound { entity: "session", id: session_id.to_owned() });
            }
            let row = sqlx::query(
                "INSERT INTO messages (session_id, role, content, content_lz4, tokens, model, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            )
            .bind(session_id)
            .bind(message.role.as_str())
            .bind(plain)
            .bind(packed)
            .bind(message.tokens.map(i64::from))
            .bind(&message.model)
            .bind(now.as_millis())
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::db(op))?;
            let id = row.i64("id")?;
            tx.commit().await.map_err(StoreError::db(op))?;
            id
        });
        Ok(Message {
            id,
            session_id: session_id.to_owned(),
            role: message.role,
            content: message.content.clone(),
            tokens: message.tokens,
            model: message.model.clone(),
            created_at: now,
        })
    }

    /// A session's messages in order, those with id greater than `after_id` (0 for the
    /// start), at most `limit` (1–1000).
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidArgument`] for a bad limit; [`StoreError::Corrupt`] for an
    /// undecodable body; a database error.
    pub async fn list_messages(
        &self,
        session_id: &str,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError> {
        let limit = check_limit(limit)?;
        with_pool!(&self.pool, p, d => {
            let rows = sqlx::query(
                "SELECT id, session_id, role, content, content_lz4, tokens, model, created_at \
                 FROM messages WHERE session_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            )
            .bind(session_id)
            .bind(after_id)
            .bind(limit)
            .fetch_all(p)
            .await
            .map_err(StoreError::db("list messages"))?;
            rows.iter().map(message_from_row).collect()
        })
    }

    /// Stores a summary covering the first `message_count` messages of a session.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] if the session does not exist; a database error.
    pub async fn add_summary(
        &self,
        session_id: &str,
        summary: &str,
        message_count: u64,
    ) -> Result<Summary, StoreError> {
        let _turn = self.write_turn().await;
        let now = self.now();
        let count = i64::try_from(message_count)
            .map_err(|_| StoreError::invalid("message_count", "too large"))?;
        let out = with_pool!(&self.pool, p, d => {
            sqlx::query(
                "INSERT INTO session_summaries (session_id, summary, message_count, created_at) \
                 VALUES ($1, $2, $3, $4) RETURNING id, session_id, summary, message_count, created_at",
            )
            .bind(session_id)
            .bind(summary)
            .bind(count)
            .bind(now.as_millis())
            .fetch_one(p)
            .await
            .map_err(StoreError::db("add summary"))
            .and_then(|row| summary_from_row(&row))
        });
        match out {
            Err(e) if e.is_foreign_key_violation() => Err(StoreError::NotFound {
                entity: "session",
                id: session_id.to_owned(),
            }),
            other => other,
        }
    }

    /// The newest summary of a session.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn latest_summary(&self, session_id: &str) -> Result<Option<Summary>, StoreError> {
        with_pool!(&self.pool, p, d => {
            let row = sqlx::query(
                "SELECT id, session_id, summary, message_count, created_at FROM session_summaries \
                 WHERE session_id = $1 ORDER BY id DESC LIMIT 1",
            )
            .bind(session_id)
            .fetch_optional(p)
            .await
            .map_err(StoreError::db("get summary"))?;
            row.as_ref().map(summary_from_row).transpose()
        })
    }

    /// Sessions, most recently active first, optionally of one owner, each with its message
    /// count and first message; `limit` (1–1000) at a time after the `(updated_at, id)` of the
    /// previous page's last session.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidArgument`] for a bad limit; a database error.
    pub async fn list_sessions(
        &self,
        owner: Option<&str>,
        after: Option<(Timestamp, &str)>,
        limit: u32,
    ) -> Result<Vec<SessionSummaryRow>, StoreError> {
        let limit = check_limit(limit)?;
        let sql = "SELECT s.id, s.owner, s.created_at, s.updated_at, \
                   (SELECT COUNT(*) FROM messages c WHERE c.session_id = s.id) AS message_count, \
                   m.id AS m_id, m.role, m.content, m.content_lz4, m.tokens, m.model, \
                   m.created_at AS m_created_at \
                   FROM sessions s LEFT JOIN messages m ON m.id = \
                   (SELECT MIN(f.id) FROM messages f WHERE f.session_id = s.id) \
                   WHERE ($1 IS NULL OR s.owner = $1) \
                   AND ($2 IS NULL OR s.updated_at < $2 OR (s.updated_at = $2 AND s.id < $3)) \
                   ORDER BY s.updated_at DESC, s.id DESC LIMIT $4";
        with_pool!(&self.pool, p, d => {
            let rows = sqlx::query(sql)
                .bind(owner)
                .bind(after.map(|(t, _)| t.as_millis()))
                .bind(after.map_or("", |(_, id)| id))
                .bind(limit)
                .fetch_all(p)
                .await
                .map_err(StoreError::db("list sessions"))?;
            rows.iter()
                .map(|row| {
                    let session = session_from_row(row)?;
                    let first_message = match row.opt_i64("m_id")? {
                        Some(id) => Some(Message {
                            id,
                            session_id: session.id.clone(),
                            role: Role::parse(&row.string("role")?)?,
                            content: decode_body(
                                row.opt_string("content")?,
                                row.opt_bytes("content_lz4")?,
                            )?,
                            tokens: row
                                .opt_i64("tokens")?
                                .map(|t| u32::try_from(t).unwrap_or(u32::MAX)),
                            model: row.opt_string("model")?,
                            created_at: row.ts("m_created_at")?,
                        }),
                        None => None,
                    };
                    Ok(SessionSummaryRow {
                        session,
                        message_count: u64::try_from(row.i64("message_count")?).unwrap_or(0),
                        first_message,
                    })
                })
                .collect()
        })
    }

    /// Deletes a session's messages and summaries but keeps the session; returns how many
    /// messages were removed.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn clear_session(&self, session_id: &str) -> Result<u64, StoreError> {
        let _turn = self.write_turn().await;
        let op = "clear session";
        with_pool!(&self.pool, p, d => {
            let mut tx = p.begin_with(d.begin_write()).await.map_err(StoreError::db(op))?;
            let n = sqlx::query("DELETE FROM messages WHERE session_id = $1")
                .bind(session_id)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db(op))?
                .rows_affected();
            sqlx::query("DELETE FROM session_summaries WHERE session_id = $1")
                .bind(session_id)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db(op))?;
            tx.commit().await.map_err(StoreError::db(op))?;
            Ok(n)
        })
    }

    /// Deletes a session with its messages and summaries; returns whether it existed.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn delete_session(&self, session_id: &str) -> Result<bool, StoreError> {
        let _turn = self.write_turn().await;
        with_pool!(&self.pool, p, d => {
            let n = sqlx::query("DELETE FROM sessions WHERE id = $1")
                .bind(session_id)
                .execute(p)
                .await
                .map_err(StoreError::db("delete session"))?
                .rows_affected();
            Ok(n > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_or_disabled_bodies_stay_plain() {
        let text = "a".repeat(10_000);
        assert_eq!(encode_body(&text, false, 10).0, Some(text.as_str()));
        assert_eq!(encode_body("short", true, 4096).0, Some("short"));
    }

    #[test]
    fn large_bodies_round_trip_compressed() {
        let text = "the same words again and again ".repeat(500);
        let (plain, packed) = encode_body(&text, true, 4096);
        assert!(plain.is_none());
        let packed = packed.unwrap();
        assert!(packed.len() < text.len() / 4);
        assert_eq!(decode_body(None, Some(packed)).unwrap(), text);
    }

    #[test]
    fn incompressible_bodies_stay_plain() {
        // Xorshift noise over 90 symbols: LZ4 finds no matches, so the output would grow.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let text: String = (0..8192)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'!' + u8::try_from(x % 90).unwrap())
            })
            .collect();
        let (plain, packed) = encode_body(&text, true, 1024);
        assert_eq!(plain, Some(text.as_str()));
        assert!(packed.is_none());
    }

    #[test]
    fn corrupt_bodies_are_errors_not_panics() {
        let e = decode_body(None, Some(vec![0xff, 0xff, 0xff, 0x7f, 1, 2])).unwrap_err();
        assert!(
            e.to_string().starts_with("corrupt messages.content_lz4"),
            "{e}"
        );
        assert!(decode_body(None, None).is_err());
        assert!(decode_body(Some("a".into()), Some(vec![])).is_err());
    }
}
