//! Which providers a pass may use (`--routing`, `--failover`, `[provider] routing` and
//! `failover`): each provider with a key built as the connection is, with its own price table,
//! create limit and account, into the engine's `RoutePlan`. The routing itself (which task goes
//! where, failover) is the engine's (`darkroom_engine::routing`).

use std::sync::Arc;

use darkroom_engine::routing::{Route, RoutePlan, Routing};
use darkroom_engine::scheduler::Shutdown;
use darkroom_engine::{EngineError, Event, Outcome, RunSettings};
use darkroom_ledger::Ledger;
use darkroom_provider::Provider;
use tokio::sync::mpsc;

use crate::commands::Connection;
use crate::config::provider::{ProviderName, RoutingName};
use crate::config::Settings;

/// The flags that route a pass's tasks over several providers.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RouteFlags {
    /// How each task's provider is picked: fixed (the pass's provider, --provider) or cheapest (the
    /// cheapest provider that can make it and has a key; a provider that refuses the run hands its
    /// tasks never sent to the next cheapest) [default: config provider.routing]
    #[arg(long, value_enum, value_name = "HOW", conflicts_with = "provider")]
    pub routing: Option<RoutingName>,
    /// When the pass's provider refuses the run (key refused, no credit, a quota, its breaker), send
    /// its tasks never sent to these providers, in order, each at its own prices within the same
    /// budget (repeatable) [default: config provider.failover]
    #[arg(long, value_enum, value_name = "NAME")]
    pub failover: Vec<ProviderName>,
}

/// The routing plan of a pass, or `None` for a pass on the connection's provider alone (fixed,
/// no failover). `engine` is the pass's settings on the connection's provider (its rate and
/// account); the other providers get their own from `[replicate]`, `[fal]` and their keys.
/// A provider without a key is left out, said on stderr.
pub fn plan(
    settings: &Settings,
    connection: &Connection,
    flags: &RouteFlags,
    engine: &RunSettings,
    rate_flag: Option<u32>,
) -> Option<RoutePlan> {
    // An explicit --provider keeps the pass on it, whatever the config's routing says.
    let routing = match (flags.routing, connection.provider_flag()) {
        (Some(routing), _) => routing,
        (None, Some(_)) => RoutingName::Fixed,
        (None, None) => settings.provider.routing,
    };
    let failover = if flags.failover.is_empty() {
        &settings.provider.failover
    } else {
        &flags.failover
    };
    let own = connection.client.name();
    let names: Vec<ProviderName> = match routing {
        RoutingName::Fixed if failover.is_empty() => return None,
        RoutingName::Fixed => {
            let mut names: Vec<ProviderName> = ProviderName::ALL
                .into_iter()
                .filter(|n| n.as_str() == own)
                .collect();
            names.extend(failover.iter().copied().filter(|n| n.as_str() != own));
            names.dedup();
            names
        }
        RoutingName::Cheapest => ProviderName::ALL.to_vec(),
    };
    let mut routes = Vec::new();
    for name in names {
        let client: Arc<dyn Provider> = if name.as_str() == own {
            connection.client.clone()
        } else {
            match connection.client_for(name, settings) {
                Ok(client) => client,
                Err(error) => {
                    eprintln!("{}: not used ({})", name.as_str(), why(&error));
                    continue;
                }
            }
        };
        let on = settings.clone().for_provider(name);
        let per_minute = rate_flag.unwrap_or(on.limits.creates_per_minute);
        let (creates_per_minute, account) = if name.as_str() == own {
            (engine.creates_per_minute, engine.account.clone())
        } else {
            (
                (per_minute > 0).then_some(per_minute),
                connection.account_of(name),
            )
        };
        routes.push(Route {
            client,
            prices: on.prices,
            creates_per_minute,
            account,
        });
    }
    let routing = match routing {
        RoutingName::Fixed => Routing::Fixed,
        RoutingName::Cheapest => Routing::Cheapest,
    };
    Some(RoutePlan {
        routes,
        routing,
        failover: true,
    })
}

/// The provider a pass connects to first: `--provider`; else, routed by price (`--routing
/// cheapest` or `[provider] routing`), the first provider with a key (`--sim` gives every one a
/// key), so a missing key of the default provider does not stop a pass that need not use it;
/// else `[provider] default`.
pub fn home_provider(
    settings: &Settings,
    upstream: &crate::commands::Upstream,
    flags: &RouteFlags,
) -> ProviderName {
    let routing = flags.routing.unwrap_or(settings.provider.routing);
    if upstream.provider.is_some() || routing != RoutingName::Cheapest || upstream.sim {
        return settings.provider_name(upstream.provider);
    }
    ProviderName::ALL
        .into_iter()
        .find(|name| has_key(*name))
        .unwrap_or(settings.provider.default)
}

/// Whether provider `name`'s key is set in the environment (`LUMAAI_API_KEY`,
/// `REPLICATE_API_TOKEN`, `FAL_KEY` or `FAL_KEY_ID` and `FAL_KEY_SECRET`).
pub fn has_key(name: ProviderName) -> bool {
    match name {
        ProviderName::Luma => crate::config::api_key_text().is_some(),
        ProviderName::Replicate => crate::config::provider::replicate_token_text().is_some(),
        ProviderName::Fal => crate::commands::fal::key().is_some(),
    }
}

/// The routing flags given, as a printed command repeats them (`" --routing cheapest --failover
/// replicate"`), so the run it prints resumes routed the same way; `""` when none was given.
pub fn flags_again(flags: &RouteFlags) -> String {
    let mut again = String::new();
    if let Some(routing) = flags.routing {
        let name = match routing {
            RoutingName::Fixed => "fixed",
            RoutingName::Cheapest => "cheapest",
        };
        again.push_str(&format!(" --routing {name}"));
    }
    for name in &flags.failover {
        again.push_str(&format!(" --failover {}", name.as_str()));
    }
    again
}

/// A failure's one sentence, as `Failure` prints it.
fn why(error: &anyhow::Error) -> String {
    error
        .downcast_ref::<crate::exit::Failure>()
        .map_or_else(|| format!("{error:#}"), |f| f.message.clone())
}

/// Runs the pass of `job_id`: routed over the providers `flags` and the config name ([`plan`]),
/// else on the connection's provider alone.
pub async fn run(
    settings: &Settings,
    connection: &Connection,
    flags: &crate::commands::pass::RunFlags,
    (ledger, job_id): (&Ledger, i64),
    engine: &RunSettings,
    events: mpsc::Sender<Event>,
    shutdown: Shutdown,
) -> Result<Outcome, EngineError> {
    match plan(settings, connection, &flags.route, engine, flags.rate_per_minute) {
        Some(plan) => {
            darkroom_engine::routing::run_routed(ledger, &plan, engine, job_id, events, shutdown).await
        }
        None => darkroom_engine::run_pass(ledger, &connection.client, engine, job_id, events, shutdown).await,
    }
}
