//! `darkroom review`: binds a socket and serves `darkroom_review`'s router (the contact sheet, the
//! export and promotion) until Ctrl-C. The server binds to 127.0.0.1 by default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use darkroom_engine::scheduler::Shutdown;
use darkroom_jobs::{Money, Pass};
use darkroom_review::server::{hosts_for, new_token};
use darkroom_review::{Callbacks, ReviewConfig, ReviewState};

use crate::commands::pass::{run_settings, RunFlags};
use crate::commands::promote::{open_job, options};
use crate::commands::{budget_error, connect, Connection, Upstream};
use crate::config::{self, Settings};
use crate::exit::{Exit, Failure};

/// Serve a local page to choose previews and promote them (Ctrl-C stops it).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job's name (as `darkroom status` lists it).
    pub job: String,
    /// The port to serve on (0: any free port).
    #[arg(long, value_name = "N", default_value_t = 7878)]
    pub port: u16,
    /// The address to bind. Anything but loopback shows the page (and its token) to the network.
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// The final pass's budget in USD when "promote" makes finals [default: config budget.default].
    #[arg(long, value_name = "USD", value_parser = crate::commands::parse_usd)]
    pub budget: Option<Money>,
    /// Where the job's images are; finals go to OUT/JOB/final/, the export to OUT/JOB/select.csv.
    #[arg(long, value_name = "DIR", env = crate::config::env::OUT, default_value = "out")]
    pub out: PathBuf,
    #[command(flatten)]
    pub upstream: Upstream,
    #[command(flatten)]
    pub flags: RunFlags,
}

pub fn run(config_file: Option<&Path>, args: Args) -> anyhow::Result<Exit> {
    let settings = config::resolve(config_file)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run_async(settings, args))
}

async fn run_async(settings: Settings, args: Args) -> anyhow::Result<Exit> {
    let provider = settings.provider_name(args.upstream.provider);
    let settings = settings.for_provider(provider);
    let promote = options(&settings)?;
    let (ledger, job_id) = open_job(&args.upstream.db, &args.job).await?;
    if let Some(budget) = args.budget {
        darkroom_engine::budget::apply_budget(
            &ledger,
            job_id,
            Pass::Final,
            Some(budget),
            settings.budget.default,
        )
        .await
        .map_err(budget_error)?;
    }
    let listener = tokio::net::TcpListener::bind((args.bind, args.port))
        .await
        .map_err(|e| {
            Failure::new(
                Exit::BadInput,
                format!("could not listen on {}:{}: {e}", args.bind, args.port),
            )
            .with_hint("choose another port with --port N (0 picks a free one)")
        })?;
    let addr: SocketAddr = listener.local_addr()?;
    let connection = connect_for_sending(&args.upstream, &settings).await?;
    let mut run = run_settings(&settings, &args.job, Pass::Final, &args.out, &args.flags, None);
    run.account = connection
        .as_ref()
        .and_then(|c| crate::commands::budget::account_named(&settings, c, &args.flags));
    let routes = connection.as_ref().and_then(|c| {
        crate::commands::route::plan(&settings, c, &args.flags.route, &run, args.flags.rate_per_minute)
    });
    let config = ReviewConfig {
        job: args.job.clone(),
        job_id,
        ledger_path: args.upstream.db.clone(),
        out: args.out.clone(),
        token: new_token(),
        hosts: hosts_for(addr),
        promote,
        default_budget: settings.budget.default,
        run,
        callbacks: args.flags.callbacks_listen.map(|listen| Callbacks {
            listen,
            url: args.flags.callbacks_url.clone(),
        }),
        routes,
    };
    let shutdown = Shutdown::default();
    let review = ReviewState::new(
        config,
        ledger,
        connection.as_ref().map(|c| c.client.clone()),
        shutdown,
    );
    println!("review {}: http://{addr}/", args.job);
    if let Some(trial) = review.ledger().trial(job_id).await? {
        eprintln!(
            "a trial of {}: compare Flash and Photon 1 side by side at http://{addr}/trial",
            trial.of_job
        );
    }
    eprintln!(
        "open it in a browser; Ctrl-C stops the server (a promotion under way stops with it, resumable)"
    );
    darkroom_review::serve(listener, review.clone(), async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    // Let a final pass in progress drain its in-flight generations, as `run` does on Ctrl-C.
    review.finals_finished().await;
    review.ledger().close().await;
    if let Some(connection) = connection {
        connection.stop().await;
    }
    Ok(Exit::Done)
}

/// A key is needed only to send: without `--sim` and without `LUMAAI_API_KEY`, review shows the
/// page with no connection (and says promotion needs one) instead of refusing to start.
async fn connect_for_sending(upstream: &Upstream, settings: &Settings) -> anyhow::Result<Option<Connection>> {
    if upstream.sim || config::api_key().is_some() {
        return Ok(Some(connect(upstream, settings).await?));
    }
    eprintln!("{}", darkroom_review::server::PROMOTION_NEEDS_KEY);
    Ok(None)
}
