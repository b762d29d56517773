//! Usage records (one per provider call) and their aggregate by model.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Store;
use crate::clock::{Timestamp, millis_of};
use crate::db::{RowExt, with_pool};
use crate::error::StoreError;

/// How a provider call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum UsageOutcome {
    /// An answer.
    Success,
    /// An error from the provider or the transport.
    Error,
    /// No answer in time.
    Timeout,
    /// Abandoned by the caller.
    Cancelled,
}

impl UsageOutcome {
    /// The stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Error => "error",
            Self::Timeout => "timeout",
            Self::Cancelled => "cancelled",
        }
    }
}

/// One provider call to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewUsage {
    /// Provider.
    pub provider: String,
    /// Model.
    pub model: String,
    /// Prompt (input) tokens.
    pub prompt_tokens: u64,
    /// Completion (output) tokens.
    pub completion_tokens: u64,
    /// Call latency.
    pub latency: Duration,
    /// How it ended.
    pub outcome: UsageOutcome,
    /// Cost in US dollars, when known.
    pub cost_usd: Option<f64>,
    /// Who made it (API key id or user).
    pub owner: Option<String>,
    /// The job it served.
    pub job_id: Option<String>,
}

/// Totals for one model over a time range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelUsage {
    /// Model.
    pub model: String,
    /// Calls recorded.
    pub calls: u64,
    /// Calls whose outcome was not `success`.
    pub failures: u64,
    /// Sum of prompt tokens.
    pub prompt_tokens: u64,
    /// Sum of completion tokens.
    pub completion_tokens: u64,
    /// Sum of known costs (`None` when no call had a cost).
    pub cost_usd: Option<f64>,
    /// Mean latency.
    pub mean_latency: Duration,
}

fn to_i64(name: &'static str, v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::invalid(name, format!("{v} is too large")))
}

impl Store {
    /// Records one provider call; returns its row id.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidArgument`] for an empty provider or model, a token count above
    /// `i64::MAX` or a negative / non-finite cost; a database error.
    pub async fn record_usage(&self, usage: &NewUsage) -> Result<i64, StoreError> {
        let _turn = self.write_turn().await;
        if usage.provider.is_empty() {
            return Err(StoreError::invalid("provider", "must not be empty"));
        }
        if usage.model.is_empty() {
            return Err(StoreError::invalid("model", "must not be empty"));
        }
        if let Some(cost) = usage.cost_usd
            && !(cost.is_finite() && cost >= 0.0)
        {
            return Err(StoreError::invalid(
                "cost_usd",
                format!("{cost} is not a non-negative amount"),
            ));
        }
        let now = self.now();
        with_pool!(&self.pool, p, d => {
            let row = sqlx::query(
                "INSERT INTO usage_records (recorded_at, provider, model, prompt_tokens, \
                 completion_tokens, latency_ms, outcome, cost_usd, owner, job_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
            )
            .bind(now.as_millis())
            .bind(&usage.provider)
            .bind(&usage.model)
            .bind(to_i64("prompt_tokens", usage.prompt_tokens)?)
            .bind(to_i64("completion_tokens", usage.completion_tokens)?)
            .bind(millis_of(usage.latency))
            .bind(usage.outcome.as_str())
            .bind(usage.cost_usd)
            .bind(&usage.owner)
            .bind(&usage.job_id)
            .fetch_one(p)
            .await
            .map_err(StoreError::db("record usage"))?;
            row.i64("id")
        })
    }

    /// Totals by model of the calls recorded in `[from, to)`, ordered by model.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidArgument`] if `to` is before `from`; a database error.
    pub async fn usage_by_model(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<ModelUsage>, StoreError> {
        if to < from {
            return Err(StoreError::invalid(
                "to",
                format!("{to} is before from ({from})"),
            ));
        }
        let sql = "SELECT model, COUNT(*) AS calls, \
                   CAST(SUM(CASE WHEN outcome = 'success' THEN 0 ELSE 1 END) AS BIGINT) AS failures, \
                   CAST(SUM(prompt_tokens) AS BIGINT) AS prompt_tokens, \
                   CAST(SUM(completion_tokens) AS BIGINT) AS completion_tokens, \
                   SUM(cost_usd) AS cost_usd, \
                   CAST(AVG(latency_ms) AS DOUBLE PRECISION) AS mean_latency_ms \
                   FROM usage_records WHERE recorded_at >= $1 AND recorded_at < $2 \
                   GROUP BY model ORDER BY model";
        with_pool!(&self.pool, p, d => {
            let rows = sqlx::query(sql)
                .bind(from.as_millis())
                .bind(to.as_millis())
                .fetch_all(p)
                .await
                .map_err(StoreError::db("aggregate usage"))?;
            rows.iter()
                .map(|row| {
                    let count = |col| row.i64(col).map(|v| u64::try_from(v).unwrap_or(0));
                    let mean_ms = row.opt_f64("mean_latency_ms")?.unwrap_or(0.0);
                    Ok(ModelUsage {
                        model: row.string("model")?,
                        calls: count("calls")?,
                        failures: count("failures")?,
                        prompt_tokens: count("prompt_tokens")?,
                        completion_tokens: count("completion_tokens")?,
                        cost_usd: row.opt_f64("cost_usd")?,
                        mean_latency: Duration::from_secs_f64(mean_ms.max(0.0) / 1000.0),
                    })
                })
                .collect()
        })
    }
}
