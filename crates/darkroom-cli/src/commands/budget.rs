//! `darkroom budget`: sets and shows the daily and monthly spending limits of an account or a
//! label, which every run's reservations check beside the job's own budget (the ledger's
//! `spending.rs`), and the accounts the ledger has seen with what each spent this month.

use std::path::{Path, PathBuf};

use darkroom_jobs::Money;
use darkroom_ledger::{Ledger, LimitPeriod, LimitScope, LimitUsage};
use serde_json::json;

use crate::commands::pass::RunFlags;
use crate::commands::Connection;
use crate::config::Settings;
use crate::exit::{Exit, Failure};

/// Set or show spending limits shared by every run of an account or a label.
///
/// Without --daily or --monthly it shows every limit with what it has used (charges less refunds
/// this UTC day or month, plus what runs hold reserved now) and every account the ledger has seen.
/// A reservation that would take any limit of its job's account or label past it is refused: the
/// run stops as when its budget runs out (exit 3), naming the limit.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The account whose limits to set: the name runs give with --account or [account] name, or
    /// the derived name this command lists.
    #[arg(long, value_name = "NAME", conflicts_with = "label")]
    pub account: Option<String>,
    /// The label whose limits to set (runs name theirs with --label: a team, a client).
    #[arg(long, value_name = "NAME")]
    pub label: Option<String>,
    /// The daily limit in USD (UTC days), or `none` to remove it.
    #[arg(long, value_name = "USD|none", allow_hyphen_values = true)]
    pub daily: Option<String>,
    /// The monthly limit in USD (UTC calendar months), or `none` to remove it.
    #[arg(long, value_name = "USD|none", allow_hyphen_values = true)]
    pub monthly: Option<String>,
    /// The ledger file.
    #[arg(long, value_name = "PATH", env = crate::config::env::DB, default_value = "darkroom.db")]
    pub db: PathBuf,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(config_file: Option<&Path>, args: Args) -> anyhow::Result<Exit> {
    let settings = crate::config::resolve(config_file)?;
    let changes = changes(&args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        if changes.is_empty() {
            crate::commands::require_ledger(&args.db)?;
        }
        let ledger = crate::commands::open_ledger(&args.db).await?;
        let now = darkroom_ledger::now_ms();
        for (scope, name, period, limit) in &changes {
            ledger
                .set_spending_limit(*scope, name, *period, *limit, now)
                .await?;
            let what = match limit {
                Some(limit) => format!("set to {limit}"),
                None => "removed".to_string(),
            };
            eprintln!(
                "the {} limit of {} {name:?} is {what}",
                period.adjective(),
                scope.as_str()
            );
        }
        if let Some((scope, name, _, _)) = changes.first() {
            warn_on_limits(&ledger, *scope, name, now).await?;
        }
        show(&ledger, settings.account.monthly_ceiling, args.json, now).await?;
        ledger.close().await;
        Ok(Exit::Done)
    })
}

/// A limit to set (`Some`) or remove (`None`).
type Change = (LimitScope, String, LimitPeriod, Option<Money>);

/// The changes the flags ask for; bad input names the flag and what was expected (exit 2).
fn changes(args: &Args) -> anyhow::Result<Vec<Change>> {
    let asked = [
        (LimitPeriod::Day, &args.daily),
        (LimitPeriod::Month, &args.monthly),
    ];
    if asked.iter().all(|(_, value)| value.is_none()) {
        return Ok(Vec::new());
    }
    let (scope, name) = match (&args.account, &args.label) {
        (Some(name), None) => (LimitScope::Account, name),
        (None, Some(name)) => (LimitScope::Label, name),
        _ => {
            return Err(Failure::new(
                Exit::BadInput,
                "a limit needs an owner: give --account NAME or --label NAME",
            )
            .with_hint("`darkroom budget` alone lists the accounts and limits of the ledger")
            .into())
        }
    };
    let name = name.trim();
    if name.is_empty() {
        return Err(Failure::new(Exit::BadInput, format!("--{} needs a name", scope.as_str())).into());
    }
    let mut changes = Vec::new();
    for (period, value) in asked {
        let Some(value) = value else { continue };
        let flag = match period {
            LimitPeriod::Day => "--daily",
            LimitPeriod::Month => "--monthly",
        };
        let limit = if value.trim().eq_ignore_ascii_case("none") {
            None
        } else {
            Some(Money::parse_usd(value).map_err(|e| {
                Failure::new(Exit::BadInput, format!("{flag} {value:?}: {e}"))
                    .with_hint("give an amount in USD such as 500 or 12.50, or none to remove the limit")
            })?)
        };
        changes.push((scope, name.to_string(), period, limit));
    }
    Ok(changes)
}

/// Warnings on stderr after limits of `name` were set: a daily limit above its monthly one (the
/// monthly one binds first), and an account no run on this ledger has used yet (a typo would leave
/// the real account unlimited; a limit set before the first run is kept all the same).
async fn warn_on_limits(ledger: &Ledger, scope: LimitScope, name: &str, now: i64) -> anyhow::Result<()> {
    let limits = ledger.spending_limits(now).await?;
    let of = |period| {
        limits
            .iter()
            .find(|l| l.scope == scope && l.name == name && l.period == period)
            .map(|l| l.limit)
    };
    if let (Some(daily), Some(monthly)) = (of(LimitPeriod::Day), of(LimitPeriod::Month)) {
        if daily > monthly {
            eprintln!(
                "warning: the daily limit of {} {name:?} ({daily}) is above its monthly limit ({monthly}); \
                 the monthly one stops runs first",
                scope.as_str()
            );
        }
    }
    if scope == LimitScope::Account && !ledger.accounts(now).await?.iter().any(|a| a.name == name) {
        eprintln!(
            "warning: no run on this ledger has used an account named {name:?} yet; the limit is kept \
             and applies once a run names it (--account or [account] name); `darkroom budget` lists \
             the accounts seen"
        );
    }
    Ok(())
}

/// Prints the limits and the accounts, as text on stderr and stdout or one JSON object.
async fn show(ledger: &Ledger, ceiling: Money, json: bool, now: i64) -> anyhow::Result<()> {
    let limits = ledger.spending_limits(now).await?;
    let mut accounts = Vec::new();
    for account in ledger.accounts(now).await? {
        let month = ledger
            .period_spend(LimitScope::Account, &account.name, LimitPeriod::Month, now)
            .await?;
        let limited = limits.iter().any(|l| {
            l.scope == LimitScope::Account && l.name == account.name && l.period == LimitPeriod::Month
        });
        accounts.push((account, month, limited));
    }
    if json {
        let limits: Vec<_> = limits.iter().map(limit_json).collect();
        let accounts: Vec<_> = accounts
            .iter()
            .map(|(a, month, limited)| {
                json!({
                    "name": a.name, "base_url": a.base_url, "runs_alive": a.live_runs,
                    "in_flight": a.in_flight, "max_in_flight": a.max_in_flight,
                    "month_spent_micros": month.micros(), "monthly_limit": limited,
                    "monthly_ceiling_micros": ceiling.micros(),
                })
            })
            .collect();
        println!("{}", json!({ "limits": limits, "accounts": accounts }));
        return Ok(());
    }
    if limits.is_empty() {
        println!("no spending limits set: `darkroom budget --account NAME --monthly USD` sets one");
    }
    for limit in &limits {
        println!(
            "{:<8} {:<24} {:<8} limit {:>10}  spent {:>10}  reserved {:>9}  left {:>10}",
            limit.scope.as_str(),
            format!("{:?}", limit.name),
            limit.period.adjective(),
            limit.limit.to_string(),
            limit.spent.to_string(),
            limit.reserved.to_string(),
            limit.left().to_string()
        );
    }
    for (account, month, limited) in &accounts {
        println!(
            "account {:?} ({}): {} run(s) alive, {} in flight, {month} spent this month",
            account.name, account.base_url, account.live_runs, account.in_flight
        );
        if !limited {
            println!("{}", ceiling_note(*month, ceiling));
        }
    }
    Ok(())
}

/// What an account without a monthly limit is told: the upstream's own monthly ceiling, and how
/// close it is.
pub fn ceiling_note(month: Money, ceiling: Money) -> String {
    format!(
        "  no monthly limit set: the upstream's own monthly cap ({ceiling}, config account.monthly_ceiling) \
         is the ceiling, {} of it used; set one with --monthly",
        percent(month, ceiling)
    )
}

fn percent(part: Money, whole: Money) -> String {
    if whole.micros() <= 0 {
        return "all".to_string();
    }
    format!("{}%", part.micros().saturating_mul(100) / whole.micros())
}

fn limit_json(limit: &LimitUsage) -> serde_json::Value {
    json!({
        "scope": limit.scope.as_str(), "name": limit.name, "period": limit.period.as_str(),
        "limit_micros": limit.limit.micros(), "spent_micros": limit.spent.micros(),
        "reserved_micros": limit.reserved.micros(), "left_micros": limit.left().micros(),
    })
}

/// Warns on stderr, before a run on `account` starts, when the account has no monthly limit of
/// its own and this month's spend has passed 80% of the upstream's monthly `ceiling`.
pub async fn warn_near_ceiling(ledger: &Ledger, account: &str, ceiling: Money) -> anyhow::Result<()> {
    let now = darkroom_ledger::now_ms();
    let limited = ledger
        .spending_limits(now)
        .await?
        .iter()
        .any(|l| l.scope == LimitScope::Account && l.name == account && l.period == LimitPeriod::Month);
    if limited {
        return Ok(());
    }
    let month = ledger
        .period_spend(LimitScope::Account, account, LimitPeriod::Month, now)
        .await?;
    if darkroom_engine::budget_warning_due(month, ceiling) {
        eprintln!(
            "warning: account {account:?} has spent {month} this month, {} of the upstream's monthly cap \
             ({ceiling}); set a limit with `darkroom budget --account {account} --monthly USD`",
            percent(month, ceiling)
        );
    }
    Ok(())
}

/// The account the run shares limits on: the connection's (its key and base URL) under the name
/// `--account` or `[account] name` gives; warns when its month is near the upstream's cap.
pub async fn run_account(
    settings: &Settings,
    connection: &Connection,
    flags: &RunFlags,
    ledger: &Ledger,
) -> anyhow::Result<Option<darkroom_engine::account::Account>> {
    let Some(account) = account_named(settings, connection, flags) else {
        return Ok(None);
    };
    warn_near_ceiling(ledger, &account.name, settings.account.monthly_ceiling).await?;
    Ok(Some(account))
}

/// The connection's account under the name `--account` or `[account] name` gives, if any.
pub fn account_named(
    settings: &Settings,
    connection: &Connection,
    flags: &RunFlags,
) -> Option<darkroom_engine::account::Account> {
    let configured = flags.account.as_deref().unwrap_or(&settings.account.name);
    Some(connection.account.clone()?.named(Some(configured)))
}
