//! Autoscaler decisions: what was observed, which rules matched, what was done and why.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Store;
use crate::clock::Timestamp;
use crate::db::{RowExt, json_text, with_pool};
use crate::error::StoreError;
use crate::jobs::check_limit;

/// What the autoscaler did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ScaleAction {
    /// Added replicas.
    ScaleUp,
    /// Removed replicas.
    ScaleDown,
    /// Left the count alone (no rule fired, cooldown, bounds).
    Hold,
}

impl ScaleAction {
    /// The stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ScaleUp => "scale_up",
            Self::ScaleDown => "scale_down",
            Self::Hold => "hold",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "scale_up" => Self::ScaleUp,
            "scale_down" => Self::ScaleDown,
            "hold" => Self::Hold,
            other => {
                return Err(StoreError::corrupt(
                    "autoscaler_decisions.action",
                    format!("unknown action {other:?}"),
                ));
            }
        })
    }
}

/// A decision to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDecision {
    /// The scaled service.
    pub service: String,
    /// Inputs (backlog, lag, rates, CPU…).
    pub observations: Value,
    /// Names of the rules that matched.
    pub matched_rules: Vec<String>,
    /// Replicas before.
    pub current_replicas: u32,
    /// Replicas wanted.
    pub target_replicas: u32,
    /// What was done.
    pub action: ScaleAction,
    /// Why, for people.
    pub reason: String,
    /// Which decider (`rules`, `manual`, an instance id).
    pub decider: String,
    /// Config version, build, inputs' sources…
    pub provenance: Value,
}

/// A stored decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Row id.
    pub id: i64,
    /// When it was decided.
    pub decided_at: Timestamp,
    /// The scaled service.
    pub service: String,
    /// Inputs.
    pub observations: Value,
    /// Matched rules.
    pub matched_rules: Vec<String>,
    /// Replicas before.
    pub current_replicas: u32,
    /// Replicas wanted.
    pub target_replicas: u32,
    /// What was done.
    pub action: ScaleAction,
    /// Why.
    pub reason: String,
    /// Which decider.
    pub decider: String,
    /// Provenance.
    pub provenance: Value,
}

fn decision_from_row<R: RowExt>(row: &R) -> Result<Decision, StoreError> {
    let rules: Vec<String> = serde_json::from_str(&row.string("matched_rules")?)
        .map_err(|e| StoreError::corrupt("autoscaler_decisions.matched_rules", e))?;
    let replicas = |col| row.i64(col).map(|v| u32::try_from(v).unwrap_or(u32::MAX));
    Ok(Decision {
        id: row.i64("id")?,
        decided_at: row.ts("decided_at")?,
        service: row.string("service")?,
        observations: row.json("observations")?,
        matched_rules: rules,
        current_replicas: replicas("current_replicas")?,
        target_replicas: replicas("target_replicas")?,
        action: ScaleAction::parse(&row.string("action")?)?,
        reason: row.string("reason")?,
        decider: row.string("decider")?,
        provenance: row.json("provenance")?,
    })
}

const DECISION_RETURNING: &str = " RETURNING id, decided_at, service, observations, matched_rules, \
    current_replicas, target_replicas, action, reason, decider, provenance";

impl Store {
    /// Records an autoscaler decision, stamped now.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidArgument`] for an empty service; a database error.
    pub async fn record_decision(&self, decision: &NewDecision) -> Result<Decision, StoreError> {
        let _turn = self.write_turn().await;
        if decision.service.is_empty() {
            return Err(StoreError::invalid("service", "must not be empty"));
        }
        let now = self.now();
        let rules = Value::from(decision.matched_rules.clone()).to_string();
        let sql = format!(
            "INSERT INTO autoscaler_decisions (decided_at, service, observations, matched_rules, \
             current_replicas, target_replicas, action, reason, decider, provenance) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10){DECISION_RETURNING}"
        );
        with_pool!(&self.pool, p, d => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(now.as_millis())
                .bind(&decision.service)
                .bind(json_text(&decision.observations))
                .bind(rules)
                .bind(i64::from(decision.current_replicas))
                .bind(i64::from(decision.target_replicas))
                .bind(decision.action.as_str())
                .bind(&decision.reason)
                .bind(&decision.decider)
                .bind(json_text(&decision.provenance))
                .fetch_one(p)
                .await
                .map_err(StoreError::db("record decision"))?;
            decision_from_row(&row)
        })
    }

    /// A service's decisions, newest first, at most `limit` (1–1000), those with id below
    /// `before_id` when given (pass the last id of the previous page).
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidArgument`] for a bad limit; a database error.
    pub async fn list_decisions(
        &self,
        service: &str,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Decision>, StoreError> {
        let limit = check_limit(limit)?;
        let sql = "SELECT id, decided_at, service, observations, matched_rules, current_replicas, \
                   target_replicas, action, reason, decider, provenance FROM autoscaler_decisions \
                   WHERE service = $1 AND ($2 IS NULL OR id < $2) \
                   ORDER BY id DESC LIMIT $3";
        with_pool!(&self.pool, p, d => {
            let rows = sqlx::query(sql)
                .bind(service)
                .bind(before_id)
                .bind(limit)
                .fetch_all(p)
                .await
                .map_err(StoreError::db("list decisions"))?;
            rows.iter().map(decision_from_row).collect()
        })
    }
}
