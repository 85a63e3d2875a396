//! `darkroom reframe` killed with SIGKILL and resumed with the same command, with the real binary
//! against a `darkroom sim` process whose account (and image URLs) are kept across its restarts:
//! nothing is paid twice (the ledger equals the simulator's bill), every reframe is on disk once in
//! its new shape, the resumed run announces the creates the killed one left upstream as in flight
//! (not as made, not as new), and a resumed run under a lower budget stops at it.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use darkroom_jobs::{Money, Pass};
use darkroom_testkit::exiftool::{tags, text as tag};
use support::{against, code, get_json, text, write, Killed, SimProcess};

const FLASH: i64 = 4_000;
const PHOTON: i64 = 15_000;
/// The job's rows: one of each shape below, so `--to 1:1,9:16,16:9` makes 2 + 2 + 2 + 3 = 9.
const ROWS: [(&str, &str); 4] = [
    ("banner", "16:9"),
    ("story", "9:16"),
    ("feed", "1:1"),
    ("print", "4:3"),
];
const TO: &str = "1:1,9:16,16:9";
const REFRAMES: i64 = 9;

/// The account's simulator, kept in `dir/account` across restarts, no rate limit.
fn sim(dir: &Path, extra: &[&str]) -> SimProcess {
    let state = dir.join("account");
    let mut args = vec!["--state", state.to_str().unwrap(), "--rate-per-minute", "0"];
    args.extend_from_slice(extra);
    SimProcess::start(dir, &args)
}

/// Previews and finals of every row, made at once (no latency). Returns the bill so far.
fn finals(dir: &Path) -> i64 {
    let rows: String = ROWS
        .iter()
        .map(|(id, shape)| format!("{id},A gift box of dark chocolate for the {id} placement,{shape}\n"))
        .collect();
    write(dir, "posters.csv", &format!("id,prompt,aspect_ratio\n{rows}"));
    let sim = sim(dir, &["--time-scale", "0"]);
    for args in [
        &["run", "posters.csv"][..],
        &["promote", "posters", "--all", "--budget", "1"][..],
    ] {
        let out = against(dir, &sim).args(args).output().unwrap();
        assert_eq!(code(&out), 0, "{args:?}: {}", text(&out.stderr));
    }
    let bill = sim.net_billing();
    assert_eq!(bill, 4 * FLASH + 4 * PHOTON);
    bill
}

fn reframe(dir: &Path, sim: &SimProcess, budget: &str) -> Command {
    let mut command = against(dir, sim);
    command.args([
        "reframe",
        "posters",
        "--to",
        TO,
        "--budget",
        budget,
        "--rate-per-minute",
        "1200",
    ]);
    command
}

/// Starts `command` and kills it with SIGKILL once `ready` holds (checked every 20 ms).
fn kill_when(mut command: Command, mut ready: impl FnMut() -> bool) {
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let started = Instant::now();
    while !ready() {
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "the reframe ended before it was killed"
        );
        assert!(started.elapsed() < Duration::from_secs(60), "never ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.0.kill().unwrap();
    child.0.wait().unwrap();
}

/// Charges the simulated account holds (not refunds).
fn charges(sim: &SimProcess) -> i64 {
    get_json(&sim.base_url, "/sim/billing")["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "charge")
        .count() as i64
}

/// Reframe files on disk (no temporary file counted).
fn reframes_on_disk(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir.join("out/posters/reframe")) {
        Err(_) => Vec::new(),
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| !name.starts_with('.'))
            .collect(),
    }
}

/// What the ledger says of the reframe pass: its counts, its spent and reserved micro-dollars and
/// budget, and the ledger's net charges over every pass.
struct Ledgered {
    counts: darkroom_ledger::Counts,
    spent: i64,
    reserved: i64,
    budget: i64,
    net: i64,
}

fn ledgered(dir: &Path) -> Ledgered {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let ledger = darkroom_ledger::Ledger::open(&dir.join("darkroom.db"))
            .await
            .unwrap();
        let job = ledger.job("posters").await.unwrap();
        let counts = ledger.counts(job.id, Pass::Reframe).await.unwrap();
        let pass = ledger.pass(job.id, Pass::Reframe).await.unwrap().unwrap();
        Ledgered {
            counts,
            spent: pass.spent_micros,
            reserved: pass.reserved_micros,
            budget: pass.budget_micros,
            net: ledger.net_charges().await.unwrap().micros(),
        }
    })
}

/// Each reframe in results.jsonl once, and its file in the shape its key names.
fn each_reframe_once_in_its_shape(dir: &Path) {
    let results = std::fs::read_to_string(dir.join("out/posters/results.jsonl")).unwrap();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for line in results.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["pass"] == "reframe" && v["status"] == "done" {
            *seen.entry(v["id"].as_str().unwrap().to_string()).or_default() += 1;
        }
    }
    let mut expected = Vec::new();
    for (id, shape) in ROWS {
        for target in TO.split(',').filter(|t| *t != shape) {
            expected.push(format!("{id}-{}", target.replace(':', "-")));
        }
    }
    expected.sort();
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), expected, "{results}");
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    let mut files = reframes_on_disk(dir);
    files.sort();
    let stems: Vec<String> = files
        .iter()
        .map(|f| f.trim_end_matches(".jpg").to_string())
        .collect();
    assert_eq!(stems, expected, "one file per reframe, no temporary file left");
    for key in &expected {
        let found = tags(&dir.join(format!("out/posters/reframe/{key}.jpg")));
        let w: i64 = tag(&found, "File:ImageWidth").unwrap().parse().unwrap();
        let h: i64 = tag(&found, "File:ImageHeight").unwrap().parse().unwrap();
        let mut parts = key.rsplitn(3, '-');
        let b: i64 = parts.next().unwrap().parse().unwrap();
        let a: i64 = parts.next().unwrap().parse().unwrap();
        assert_eq!(w * b, h * a, "{key} is {w}x{h}, not {a}:{b}");
    }
}

#[test]
fn a_reframe_killed_with_creates_in_flight_resumes_them_as_in_flight_and_pays_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let before = finals(dir);
    let charged_before = 4 + 4;
    // Each reframe takes 4 s upstream: killed after its third create, the sent ones are in flight.
    let sim = sim(dir, &["--photon-latency", "4-4"]);
    kill_when(reframe(dir, &sim, "1"), || charges(&sim) >= charged_before + 3);
    let killed = ledgered(dir);
    assert!(killed.counts.in_flight >= 3, "{:?}", killed.counts);
    assert!(
        killed.counts.done < killed.counts.in_flight,
        "{:?}",
        killed.counts
    );
    assert!(reframes_on_disk(dir).len() as u64 <= killed.counts.done);

    let out = reframe(dir, &sim, "1").output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 0, "{stderr}");
    let in_flight = killed.counts.in_flight;
    let made = killed.counts.done;
    let new = REFRAMES as u64 - in_flight - made;
    let cost = Money::from_micros(new as i64 * PHOTON);
    assert!(
        stderr.contains(&format!(
            "reframing: {new} image(s) to make for {cost}, {in_flight} in flight from an earlier run, \
             {made} already made"
        )),
        "the killed run's creates are announced in flight, not made and not new: {stderr}"
    );

    each_reframe_once_in_its_shape(dir);
    let bill = sim.net_billing();
    assert_eq!(bill, before + REFRAMES * PHOTON, "each reframe paid once");
    assert_eq!(charges(&sim), charged_before + REFRAMES);
    let after = ledgered(dir);
    assert_eq!(after.net, bill, "the ledger equals the bill");
    assert_eq!(after.spent, REFRAMES * PHOTON);
    assert_eq!(after.reserved, 0, "no reservation left behind");
    assert_eq!(after.counts.done, REFRAMES as u64);

    // The same command once more: nothing new, nothing paid.
    let again = reframe(dir, &sim, "1").output().unwrap();
    assert_eq!(code(&again), 0, "{}", text(&again.stderr));
    assert!(
        text(&again.stderr).contains(&format!(
            "reframing: 0 image(s) to make for $0.00, 0 in flight from an earlier run, {REFRAMES} already made"
        )),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(sim.net_billing(), bill);
}

#[test]
fn a_reframe_killed_after_some_are_done_and_resumed_under_a_lower_budget_stops_at_it() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let before = finals(dir);
    // 0.5 s upstream each, 2 in flight at once: killed once 3 are on disk, some in flight.
    let sim = sim(dir, &["--photon-latency", "0.5-0.5"]);
    let mut command = reframe(dir, &sim, "1");
    command.args(["--max-in-flight", "2"]);
    kill_when(command, || reframes_on_disk(dir).len() >= 3);
    let killed = ledgered(dir);
    assert!(killed.counts.done >= 3, "{:?}", killed.counts);
    assert!(killed.counts.done < REFRAMES as u64, "{:?}", killed.counts);
    // What the account holds for reframes once the killed run's creates are all upstream.
    std::thread::sleep(Duration::from_millis(1_000));
    let committed = (sim.net_billing() - before) / PHOTON;
    assert!(committed < REFRAMES, "some are left to make: {committed}");

    // Room for two more reframes and a part of a third, out of more than two left.
    let budget = Money::from_micros((committed + 2) * PHOTON + 5_000);
    let budget_text = budget.to_string();
    let budget_usd = budget_text.trim_start_matches('$');
    let out = reframe(dir, &sim, budget_usd).output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 3, "the budget stopped the run: {stderr}");
    assert!(stderr.contains(&format!("reframe budget {budget}")), "{stderr}");

    let bill = sim.net_billing();
    assert_eq!(
        bill,
        before + (committed + 2) * PHOTON,
        "two more made, the budget never exceeded"
    );
    let after = ledgered(dir);
    assert_eq!(after.net, bill, "the ledger equals the bill");
    assert_eq!(after.budget, budget.micros());
    assert!(
        after.spent + after.reserved <= after.budget,
        "spent {} of {}",
        after.spent,
        after.budget
    );
    assert_eq!(after.reserved, 0, "no reservation left behind");
    assert_eq!(after.counts.done as i64, committed + 2);
    assert_eq!(reframes_on_disk(dir).len() as i64, committed + 2);

    // The same command with room for the rest finishes them, each paid once.
    let out = reframe(dir, &sim, "1").output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    each_reframe_once_in_its_shape(dir);
    assert_eq!(sim.net_billing(), before + REFRAMES * PHOTON);
    assert_eq!(ledgered(dir).net, sim.net_billing());
}

#[test]
fn a_reframe_killed_while_its_creates_are_unanswered_finds_them_on_the_account_and_sends_none_again() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let before = finals(dir);
    {
        // Every create is held unanswered for 1.5 s and only then committed: the run is killed
        // while its 3 first creates are held, so it never learns their generation ids.
        let sim = sim(
            dir,
            &[
                "--photon-latency",
                "0.5-0.5",
                "--create-late",
                "1",
                "--late-commit-delay",
                "1.5",
            ],
        );
        let mut command = reframe(dir, &sim, "1");
        command.args(["--max-in-flight", "3"]);
        kill_when(command, || {
            let stats = get_json(&sim.base_url, "/sim/stats");
            stats["faults"]["create_late"].as_u64().unwrap_or(0) >= 3
        });
        std::thread::sleep(Duration::from_millis(2_500));
        assert_eq!(
            sim.net_billing(),
            before + 3 * PHOTON,
            "the account committed and billed the held creates"
        );
    }
    let killed = ledgered(dir);
    assert_eq!(
        (killed.counts.in_flight, killed.counts.done),
        (3, 0),
        "{:?}",
        killed.counts
    );

    let sim = sim(dir, &["--photon-latency", "0.5-0.5"]);
    let out = reframe(dir, &sim, "1")
        .env("DARKROOM_SETTLE_WINDOW_SECONDS", "5")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 0, "{stderr}");
    assert!(
        stderr.contains(
            "reframing: 6 image(s) to make for $0.09, 3 in flight from an earlier run, 0 already made"
        ),
        "{stderr}"
    );
    each_reframe_once_in_its_shape(dir);
    let bill = sim.net_billing();
    assert_eq!(
        bill,
        before + REFRAMES * PHOTON,
        "the held creates were found on the account, not sent again"
    );
    assert_eq!(charges(&sim), 8 + REFRAMES);
    let after = ledgered(dir);
    assert_eq!(after.net, bill, "the ledger equals the bill");
    assert_eq!(after.reserved, 0, "no reservation left behind");
}
