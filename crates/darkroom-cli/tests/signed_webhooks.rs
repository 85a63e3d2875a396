//! Signed webhooks through `--callbacks-listen` on Replicate (Standard Webhooks, HMAC-SHA256) and
//! fal (ED25519 against the published keys), with the real binary and a `darkroom sim` process:
//! genuine deliveries arrive, are checked and make the run read each generation once, with fewer
//! status reads than polling alone; unsigned, forged and replayed deliveries are refused with 401,
//! counted, and change nothing (the run finishes by its safety polls, every image made once, the
//! ledger equal to the bill).

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{code, darkroom, get_json, text, write, SimProcess};

const ROWS: usize = 6;

fn job(dir: &Path) {
    let mut rows = String::from("id,prompt,aspect_ratio\n");
    for i in 0..ROWS {
        rows.push_str(&format!(
            "shelf-{i},A walnut wall shelf number {i} with books,1:1\n"
        ));
    }
    write(dir, "shelves.csv", &rows);
}

#[derive(Clone, Copy, Debug)]
enum Provider {
    Replicate,
    Fal,
}

impl Provider {
    fn name(self) -> &'static str {
        match self {
            Provider::Replicate => "replicate",
            Provider::Fal => "fal",
        }
    }

    /// `darkroom` pointed at the simulator's API of this provider, with its key.
    fn command(self, dir: &Path, sim: &SimProcess) -> Command {
        let origin = sim.base_url.trim_end_matches("/dream-machine/v1").to_string();
        let mut command = darkroom(dir);
        match self {
            Provider::Replicate => command
                .env("REPLICATE_BASE_URL", format!("{origin}/replicate"))
                .env("REPLICATE_API_TOKEN", "r8_test-token"),
            Provider::Fal => command
                .env("FAL_KEY", "fal-test-key-0001")
                .env("DARKROOM_FAL_QUEUE_URL", format!("{origin}/fal/queue"))
                .env("DARKROOM_FAL_API_URL", format!("{origin}/fal/api/v1"))
                .env(
                    "DARKROOM_FAL_JWKS_URL",
                    format!("{origin}/fal/rest/.well-known/jwks.json"),
                ),
        };
        command
    }

    fn run(self, dir: &Path, sim: &SimProcess, callbacks: bool) -> Output {
        let mut command = self.command(dir, sim);
        command.args(["run", "shelves.csv", "--provider", self.name(), "--budget", "5"]);
        if callbacks {
            // The first safety read comes after four times the usual latency: 12 s here, far past
            // the simulator's generations, so every read of a run with callbacks is a delivery's.
            let config = dir.join("slow-polls.toml");
            std::fs::write(&config, "[latency]\n\"photon-flash-1\" = 3.0\n").unwrap();
            command
                .args(["--callbacks-listen", "127.0.0.1:0", "--config"])
                .arg(&config);
        }
        command.output().unwrap()
    }

    /// The provider's account stats: requests by endpoint and status, webhook outcomes.
    fn stats(self, sim: &SimProcess) -> serde_json::Value {
        match self {
            Provider::Replicate => get_json(&sim.base_url, "/sim/stats"),
            Provider::Fal => get_json(&sim.base_url, "/sim/fal/stats"),
        }
    }

    /// How many deliveries the simulator counted with `outcome` (delivered, refused, failed).
    fn webhooks(self, sim: &SimProcess, outcome: &str) -> i64 {
        let key = match self {
            Provider::Replicate => format!("replicate webhook {outcome}"),
            Provider::Fal => format!("webhook {outcome}"),
        };
        self.stats(sim)["requests"][key].as_i64().unwrap_or(0)
    }

    /// Status reads of generations: single reads and list pages.
    fn reads(self, sim: &SimProcess) -> i64 {
        let stats = self.stats(sim);
        stats["requests"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(key, _)| match self {
                Provider::Replicate => key.starts_with("GET /replicate/predictions"),
                Provider::Fal => key.contains("/status ") || key.contains("by-endpoint"),
            })
            .map(|(_, n)| n.as_i64().unwrap())
            .sum()
    }

    fn net_bill(self, sim: &SimProcess) -> i64 {
        match self {
            Provider::Replicate => sim.net_billing(),
            Provider::Fal => get_json(&sim.base_url, "/sim/fal/billing")["net_micros"]
                .as_i64()
                .unwrap(),
        }
    }
}

/// The ledger's net spend of the job, from `darkroom report --json`.
fn ledger_spent(provider: Provider, dir: &Path, sim: &SimProcess) -> i64 {
    let output = provider
        .command(dir, sim)
        .args(["report", "shelves", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    report["spent_micros"].as_i64().unwrap()
}

fn images(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("out/shelves/preview"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A run with callbacks receives every delivery signed and checked, and reads less than a run
/// that only polls (each on its own simulator, same seed).
fn signed_deliveries_arrive_and_save_reads(provider: Provider) {
    // Generations of 1-2 s: polling alone reads each a few times (first at the usual 0.3 s).
    let sim_args = ["--time-scale", "1", "--flash-latency", "1-2", "--seed", "7"];
    let polled = tempfile::tempdir().unwrap();
    job(polled.path());
    let polled_sim = SimProcess::start(polled.path(), &sim_args);
    let output = provider.run(polled.path(), &polled_sim, false);
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    let polled_reads = provider.reads(&polled_sim);

    let dir = tempfile::tempdir().unwrap();
    job(dir.path());
    let sim = SimProcess::start(dir.path(), &sim_args);
    let output = provider.run(dir.path(), &sim, true);
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 0, "{stderr}");
    assert_eq!(images(dir.path()), ROWS);
    assert_eq!(
        provider.webhooks(&sim, "delivered"),
        ROWS as i64,
        "{}",
        provider.stats(&sim)
    );
    assert_eq!(provider.webhooks(&sim, "refused"), 0);
    assert!(
        stderr.contains(&format!(
            "callbacks: {ROWS} received, 0 refused as not validly signed (unsigned, forged or replayed), 0 refused"
        )),
        "{stderr}"
    );
    let reads = provider.reads(&sim);
    assert!(
        reads < polled_reads,
        "{reads} reads with webhooks, {polled_reads} polling alone"
    );
    assert_eq!(ledger_spent(provider, dir.path(), &sim), provider.net_bill(&sim));
}

/// Every delivery tampered with `fault` is refused (401, each of its 4 tries), counted and logged,
/// and the run still makes every image once by its safety polls, the ledger equal to the bill.
fn tampered_deliveries_are_refused_and_change_nothing(provider: Provider, fault: &str) {
    let dir = tempfile::tempdir().unwrap();
    job(dir.path());
    let sim = SimProcess::start(dir.path(), &["--time-scale", "0.3", fault, "1"]);
    let output = provider.run(dir.path(), &sim, true);
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 0, "{fault}: {stderr}");
    assert_eq!(images(dir.path()), ROWS, "{fault}");
    assert_eq!(provider.webhooks(&sim, "delivered"), 0, "{fault}");
    let refused = provider.webhooks(&sim, "refused");
    assert_eq!(refused, 4 * ROWS as i64, "{fault}: {}", provider.stats(&sim));
    assert!(
        stderr.contains(&format!(
            "callbacks: 0 received, {refused} refused as not validly signed"
        )),
        "{fault}: {stderr}"
    );
    assert_eq!(
        ledger_spent(provider, dir.path(), &sim),
        provider.net_bill(&sim),
        "{fault}"
    );
    // One create per row: a refused delivery never made anything be sent again.
    let creates: i64 = provider.stats(&sim)["requests"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(key, _)| key.starts_with("POST /") && (key.ends_with(" 200") || key.ends_with(" 201")))
        .map(|(_, n)| n.as_i64().unwrap())
        .sum();
    assert_eq!(creates, ROWS as i64, "{fault}: {}", provider.stats(&sim));
}

#[test]
fn replicate_webhooks_arrive_signed_and_the_run_reads_less_than_by_polling() {
    signed_deliveries_arrive_and_save_reads(Provider::Replicate);
}

#[test]
fn fal_webhooks_arrive_signed_and_the_run_reads_less_than_by_polling() {
    signed_deliveries_arrive_and_save_reads(Provider::Fal);
}

#[test]
fn unsigned_forged_and_replayed_replicate_deliveries_are_refused_and_change_nothing() {
    for fault in ["--webhook-unsigned", "--webhook-forged", "--webhook-replayed"] {
        tampered_deliveries_are_refused_and_change_nothing(Provider::Replicate, fault);
    }
}

#[test]
fn unsigned_forged_and_replayed_fal_deliveries_are_refused_and_change_nothing() {
    for fault in ["--webhook-unsigned", "--webhook-forged", "--webhook-replayed"] {
        tampered_deliveries_are_refused_and_change_nothing(Provider::Fal, fault);
    }
}
