//! The schema, as an ordered list of migrations shared by both backends.
//!
//! DDL is written once; `{id}`, `{blob}` and `{float}` are replaced per dialect
//! (`db::render_ddl`). Timestamps are `BIGINT` milliseconds since the Unix epoch (UTC); JSON
//! values are `TEXT`. A migration is applied at most once (recorded in
//! `quorum_schema_migrations`); never edit a released one, append a new one.

/// One schema step.
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) name: &'static str,
    pub(crate) statements: &'static [&'static str],
}

/// The newest schema version this build knows. A database with a higher version is refused
/// ([`StoreError::SchemaTooNew`](crate::StoreError::SchemaTooNew)).
pub const SCHEMA_VERSION: i64 = 1;

pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "initial",
    statements: &[
        "CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN
                ('pending', 'running', 'completed', 'failed', 'cancelled', 'timed_out')),
            priority BIGINT NOT NULL DEFAULT 0,
            payload TEXT NOT NULL,
            result TEXT,
            error TEXT,
            error_class TEXT,
            attempts BIGINT NOT NULL DEFAULT 0,
            owner TEXT,
            session_id TEXT,
            created_at BIGINT NOT NULL,
            started_at BIGINT,
            finished_at BIGINT,
            updated_at BIGINT NOT NULL,
            lease_owner TEXT,
            lease_expires_at BIGINT,
            progress_seq BIGINT NOT NULL DEFAULT 0
        )",
        // Claim order (pending by priority then age) and recovery (running by lease expiry).
        "CREATE INDEX jobs_state_idx ON jobs (state, priority DESC, created_at, id)",
        "CREATE INDEX jobs_created_idx ON jobs (created_at, id)",
        "CREATE INDEX jobs_owner_idx ON jobs (owner, created_at, id)",
        // Retention per terminal state.
        "CREATE INDEX jobs_finished_idx ON jobs (state, finished_at)",
        "CREATE TABLE job_progress (
            job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
            seq BIGINT NOT NULL,
            percent {float},
            message TEXT,
            models TEXT,
            created_at BIGINT NOT NULL,
            PRIMARY KEY (job_id, seq)
        )",
        "CREATE TABLE job_results (
            id {id},
            job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
            model TEXT NOT NULL,
            provider TEXT NOT NULL,
            content TEXT,
            error TEXT,
            error_class TEXT,
            usage TEXT,
            latency_ms BIGINT,
            fallback TEXT,
            created_at BIGINT NOT NULL
        )",
        "CREATE INDEX job_results_job_idx ON job_results (job_id, id)",
        "CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            owner TEXT,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL
        )",
        "CREATE INDEX sessions_updated_idx ON sessions (updated_at, id)",
        "CREATE INDEX sessions_owner_idx ON sessions (owner, updated_at)",
        // Exactly one of `content` (plain) and `content_lz4` (compressed) is set.
        "CREATE TABLE messages (
            id {id},
            session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
            role TEXT NOT NULL,
            content TEXT,
            content_lz4 {blob},
            tokens BIGINT,
            model TEXT,
            created_at BIGINT NOT NULL,
            CHECK ((content IS NULL) <> (content_lz4 IS NULL))
        )",
        "CREATE INDEX messages_session_idx ON messages (session_id, id)",
        "CREATE TABLE session_summaries (
            id {id},
            session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
            summary TEXT NOT NULL,
            message_count BIGINT NOT NULL,
            created_at BIGINT NOT NULL
        )",
        "CREATE INDEX session_summaries_session_idx ON session_summaries (session_id, id)",
        "CREATE TABLE usage_records (
            id {id},
            recorded_at BIGINT NOT NULL,
            provider TEXT NOT NULL,
            model TEXT NOT NULL,
            prompt_tokens BIGINT NOT NULL,
            completion_tokens BIGINT NOT NULL,
            latency_ms BIGINT NOT NULL,
            outcome TEXT NOT NULL,
            cost_usd {float},
            owner TEXT,
            job_id TEXT
        )",
        "CREATE INDEX usage_records_recorded_idx ON usage_records (recorded_at)",
        "CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            prefix TEXT NOT NULL,
            key_hash TEXT NOT NULL UNIQUE,
            scopes TEXT NOT NULL,
            tier TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            revoked_at BIGINT
        )",
        "CREATE TABLE autoscaler_decisions (
            id {id},
            service TEXT NOT NULL,
            decided_at BIGINT NOT NULL,
            observations TEXT NOT NULL,
            matched_rules TEXT NOT NULL,
            current_replicas BIGINT NOT NULL,
            target_replicas BIGINT NOT NULL,
            action TEXT NOT NULL,
            reason TEXT NOT NULL,
            decider TEXT NOT NULL,
            provenance TEXT NOT NULL
        )",
        "CREATE INDEX autoscaler_decisions_service_idx ON autoscaler_decisions (service, id)",
    ],
}];

/// Tables counted by [`Store::stats`](crate::Store::stats), in report order.
pub(crate) const TABLES: &[&str] = &[
    "jobs",
    "job_progress",
    "job_results",
    "sessions",
    "messages",
    "session_summaries",
    "usage_records",
    "api_keys",
    "autoscaler_decisions",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_increasing_and_end_at_schema_version() {
        let mut last = 0;
        for m in MIGRATIONS {
            assert!(m.version > last, "migration {} out of order", m.name);
            last = m.version;
        }
        assert_eq!(last, SCHEMA_VERSION);
    }
}
