//! The check, on opening, that every column holding one of a fixed set of texts (a state, a pass,
//! a model) holds one this release knows.
//!
//! Decoding a row already refuses an unknown value (`states`), but only the rows a query returns
//! are decoded: a query that selects `WHERE state = 'done'` never meets a task whose state is
//! `teleported`, so `darkroom verify` would pass over it and a run would neither make it nor say
//! why. Checking once on open makes every command refuse such a ledger alike, naming the column
//! and the value ([`LedgerError::BadValue`]). The large tables are checked through their indexes
//! (`tasks_by_state`, `generations_by_state`), so the check reads no task's prompt or request.

use darkroom_jobs::{Model, Pass};

use crate::states::{GenerationState, PassStatus, QcKind, SpendKind, TaskState};
use crate::{Ledger, LedgerError, Result};

/// One checked column: `table.column` and the texts it may hold (NULL is always allowed).
struct Checked {
    table: &'static str,
    column: &'static str,
    /// The name [`LedgerError::BadValue`] gives it (`table.column`).
    name: &'static str,
    allowed: Vec<&'static str>,
}

fn passes() -> Vec<&'static str> {
    Pass::ALL.iter().map(|p| p.as_str()).collect()
}

fn models() -> Vec<&'static str> {
    Model::ALL.iter().map(|m| m.as_str()).collect()
}

/// Every column of the schema that holds one of a fixed set of texts and is not already held to
/// it by a `CHECK` constraint. `tasks.model`, `tasks.aspect_ratio` and `tasks.format` are checked
/// where a task is taken up (scanning them would read every task row on each open).
fn checked_columns() -> Vec<Checked> {
    let column = |table, column, name, allowed| Checked {
        table,
        column,
        name,
        allowed,
    };
    vec![
        column(
            "tasks",
            "state",
            "tasks.state",
            TaskState::ALL.iter().map(|s| s.as_str()).collect(),
        ),
        column("tasks", "pass", "tasks.pass", passes()),
        column(
            "generations",
            "state",
            "generations.state",
            GenerationState::ALL.iter().map(|s| s.as_str()).collect(),
        ),
        column(
            "job_passes",
            "status",
            "job_passes.status",
            PassStatus::ALL.iter().map(|s| s.as_str()).collect(),
        ),
        column(
            "spend",
            "kind",
            "spend.kind",
            SpendKind::ALL.iter().map(|s| s.as_str()).collect(),
        ),
        column("spend", "pass", "spend.pass", passes()),
        column("audits", "pass", "audits.pass", passes()),
        column("balance_readings", "pass", "balance_readings.pass", passes()),
        column("price_observations", "pass", "price_observations.pass", passes()),
        column(
            "price_observations",
            "model",
            "price_observations.model",
            models(),
        ),
        column("pass_prices", "pass", "pass_prices.pass", passes()),
        column("pass_prices", "model", "pass_prices.model", models()),
        column(
            "qc_flags",
            "kind",
            "qc_flags.kind",
            QcKind::ALL.iter().map(|k| k.as_str()).collect(),
        ),
    ]
}

impl Ledger {
    /// Checks that every state, pass and model column holds a value this release knows.
    ///
    /// # Errors
    /// [`LedgerError::BadValue`] naming the first column found holding an unknown text and that
    /// text; [`LedgerError::Query`] when a statement fails.
    pub(crate) async fn check_stored_values(&self) -> Result<()> {
        for checked in checked_columns() {
            let placeholders = vec!["?"; checked.allowed.len()].join(", ");
            // Table and column names are this module's constants, never input.
            let sql = format!(
                "SELECT CAST({column} AS TEXT) FROM {table} WHERE {column} IS NOT NULL \
                 AND {column} NOT IN ({placeholders}) LIMIT 1",
                column = checked.column,
                table = checked.table,
            );
            let mut query = sqlx::query_scalar::<_, String>(&sql);
            for text in &checked.allowed {
                query = query.bind(*text);
            }
            if let Some(value) = query.fetch_optional(&self.pool).await? {
                return Err(LedgerError::BadValue {
                    column: checked.name,
                    value,
                });
            }
        }
        Ok(())
    }
}
