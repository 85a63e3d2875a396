//! Spending limits across jobs (migration 0013): daily and monthly limits of an account or a label
//! (`darkroom budget`), checked by every reservation in the transaction that reserves, beside the
//! pass's own budget, so concurrent runs cannot overshoot any of them together.
//!
//! A job counts toward the account it last ran on and the label it runs under (`set_job_scope`).
//! What a limit has used in a period is the net spend of the charges made under it in that UTC day
//! or month (`period_spend`, kept by a trigger on the money log: a charge counts on the day it was
//! made, toward the account and label its job had then, so relabelling a job moves none of its past
//! spend) plus what its jobs hold reserved now. Real money found after the fact (an audit's extra) counts
//! even past a limit; nothing more is reserved then.

use std::fmt;

use darkroom_jobs::Money;

use crate::{Ledger, LedgerError, Result};

/// Whose spending a limit bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LimitScope {
    /// Every job run on an account (`--account`, or the key and base URL).
    Account,
    /// Every job run with a label (`--label`: a team, a client).
    Label,
}

/// The period a limit counts over: a UTC day or a UTC calendar month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LimitPeriod {
    /// From 00:00 UTC to the next.
    Day,
    /// From the first of the month, 00:00 UTC, to the next.
    Month,
}

impl LimitScope {
    /// The stored text: `account` or `label`.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitScope::Account => "account",
            LimitScope::Label => "label",
        }
    }

    fn parse(text: &str) -> Result<LimitScope> {
        match text {
            "account" => Ok(LimitScope::Account),
            "label" => Ok(LimitScope::Label),
            _ => Err(LedgerError::BadValue {
                column: "spending_limits.scope",
                value: text.to_string(),
            }),
        }
    }
}

impl LimitPeriod {
    /// The stored text: `day` or `month`.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitPeriod::Day => "day",
            LimitPeriod::Month => "month",
        }
    }

    /// `daily` or `monthly`, as people say it.
    pub fn adjective(self) -> &'static str {
        match self {
            LimitPeriod::Day => "daily",
            LimitPeriod::Month => "monthly",
        }
    }

    fn parse(text: &str) -> Result<LimitPeriod> {
        match text {
            "day" => Ok(LimitPeriod::Day),
            "month" => Ok(LimitPeriod::Month),
            _ => Err(LedgerError::BadValue {
                column: "spending_limits.period",
                value: text.to_string(),
            }),
        }
    }
}

/// One limit and what it has used in its current period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitUsage {
    /// Account or label.
    pub scope: LimitScope,
    /// The account's or the label's name.
    pub name: String,
    /// Day or month.
    pub period: LimitPeriod,
    /// The limit.
    pub limit: Money,
    /// Charges less refunds of the scope's jobs in the current period.
    pub spent: Money,
    /// What the scope's jobs hold reserved now.
    pub reserved: Money,
}

impl LimitUsage {
    /// What is left of the limit (never below zero).
    pub fn left(&self) -> Money {
        Money::from_micros((self.limit.micros() - self.spent.micros() - self.reserved.micros()).max(0))
    }
}

impl fmt::Display for LimitUsage {
    /// `the monthly limit of label "acme" ($5.00: $4.99 spent or reserved)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the {} limit of {} {:?} ({}: {} spent or reserved this {})",
            self.period.adjective(),
            self.scope.as_str(),
            self.name,
            self.limit,
            Money::from_micros(self.spent.micros() + self.reserved.micros()),
            self.period.as_str()
        )
    }
}

/// The SQL of the current period's key for a period column `period` at the bound instant `at`.
fn period_key(period: &str, at: &str) -> String {
    format!("strftime(CASE {period} WHEN 'day' THEN '%Y-%m-%d' ELSE '%Y-%m' END, {at} / 1000, 'unixepoch')")
}

/// The limits, with their usage at instant `?1`, that `WHERE` selects (over `l`).
fn usage_query(filter: &str) -> String {
    format!(
        "SELECT l.scope, l.name, l.period, l.limit_micros,
            COALESCE((SELECT ps.net_micros FROM period_spend ps
                      WHERE ps.scope = l.scope AND ps.name = l.name AND ps.period = l.period
                        AND ps.period_key = {key}), 0),
            COALESCE((SELECT SUM(jp.reserved_micros) FROM job_passes jp JOIN jobs j ON j.id = jp.job_id
                      WHERE (l.scope = 'account' AND j.account = l.name)
                         OR (l.scope = 'label' AND j.label = l.name)), 0)
         FROM spending_limits l {filter} ORDER BY l.scope, l.name, l.period",
        key = period_key("l.period", "?1"),
    )
}

type UsageRow = (String, String, String, i64, i64, i64);

fn usage(row: UsageRow) -> Result<LimitUsage> {
    let (scope, name, period, limit, spent, reserved) = row;
    Ok(LimitUsage {
        scope: LimitScope::parse(&scope)?,
        name,
        period: LimitPeriod::parse(&period)?,
        limit: Money::from_micros(limit),
        spent: Money::from_micros(spent),
        reserved: Money::from_micros(reserved),
    })
}

impl Ledger {
    /// Sets (or with `None` removes) the `period` limit of the account or label `name`.
    pub async fn set_spending_limit(
        &self,
        scope: LimitScope,
        name: &str,
        period: LimitPeriod,
        limit: Option<Money>,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        match limit {
            Some(limit) => {
                sqlx::query(
                    "INSERT INTO spending_limits (scope, name, period, limit_micros, set_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (scope, name, period) DO UPDATE SET limit_micros = excluded.limit_micros,
                         set_at = excluded.set_at",
                )
                .bind(scope.as_str())
                .bind(name)
                .bind(period.as_str())
                .bind(limit.micros())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM spending_limits WHERE scope = ?1 AND name = ?2 AND period = ?3")
                    .bind(scope.as_str())
                    .bind(name)
                    .bind(period.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every limit set, with what it has used in its period as of `now` (Unix ms).
    pub async fn spending_limits(&self, now: i64) -> Result<Vec<LimitUsage>> {
        let rows: Vec<UsageRow> = sqlx::query_as(&usage_query(""))
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(usage).collect()
    }

    /// Net spend of an account's or a label's jobs in the period containing `now`, with or
    /// without a limit set (the default ceiling's warning reads it).
    pub async fn period_spend(
        &self,
        scope: LimitScope,
        name: &str,
        period: LimitPeriod,
        now: i64,
    ) -> Result<Money> {
        let spent: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT net_micros FROM period_spend WHERE scope = ?2 AND name = ?3 AND period = ?4
             AND period_key = {}",
            period_key("?4", "?1")
        ))
        .bind(now)
        .bind(scope.as_str())
        .bind(name)
        .bind(period.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(Money::from_micros(spent.unwrap_or(0)))
    }

    /// Records the account a job runs on and the label it runs under: its spend from now on counts
    /// toward their limits. A `label` of `None` keeps the job's label; an empty one removes it.
    pub async fn set_job_scope(&self, job_id: i64, account: Option<&str>, label: Option<&str>) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET account = COALESCE(?2, account),
                             label = CASE WHEN ?3 IS NULL THEN label WHEN ?3 = '' THEN NULL ELSE ?3 END
             WHERE id = ?1",
        )
        .bind(job_id)
        .bind(account)
        .bind(label)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The account and the label a job counts toward.
    pub async fn job_scope(&self, job_id: i64) -> Result<(Option<String>, Option<String>)> {
        Ok(sqlx::query_as("SELECT account, label FROM jobs WHERE id = ?1")
            .bind(job_id)
            .fetch_one(&self.pool)
            .await?)
    }
}

/// The first limit of the job's account or label that `price` more would take past its limit at
/// `now`, inside the reserving transaction.
pub(crate) async fn limit_exceeded(
    tx: &mut sqlx::SqliteConnection,
    job_id: i64,
    price: i64,
    now: i64,
) -> Result<Option<LimitUsage>> {
    let rows: Vec<UsageRow> = sqlx::query_as(&usage_query(
        "JOIN jobs me ON me.id = ?2
         WHERE (l.scope = 'account' AND l.name = me.account) OR (l.scope = 'label' AND l.name = me.label)",
    ))
    .bind(now)
    .bind(job_id)
    .fetch_all(&mut *tx)
    .await?;
    for row in rows {
        let usage = usage(row)?;
        if usage.spent.micros() + usage.reserved.micros() + price > usage.limit.micros() {
            return Ok(Some(usage));
        }
    }
    Ok(None)
}
