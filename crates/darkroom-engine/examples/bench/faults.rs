//! Each fault kind of the simulator alone, against darkroom.

use darkroom_sim::{Faults, SimConfig};
use tokio::runtime::Handle;

use crate::setup::{floor_seconds, run_darkroom};

/// Each fault of the `flaky` profile alone, at its `flaky` rate: which one makes the tail.
pub(crate) async fn faults_one_by_one(sims: &Handle) -> String {
    let tasks = 1000;
    let flaky = Faults::profile("flaky").unwrap();
    let none = Faults::default();
    let cases = [
        (
            "create 5xx 2%",
            Faults {
                create_5xx: flaky.create_5xx,
                ..none
            },
        ),
        (
            "accepted then dropped 2%",
            Faults {
                create_dropped: flaky.create_dropped,
                ..none
            },
        ),
        (
            "get 5xx 2%",
            Faults {
                get_5xx: flaky.get_5xx,
                ..none
            },
        ),
        (
            "slow get 1%",
            Faults {
                get_slow: flaky.get_slow,
                ..none
            },
        ),
        (
            "generation failed 2%",
            Faults {
                generation_failed: flaky.generation_failed,
                ..none
            },
        ),
        (
            "moderation 1%",
            Faults {
                moderation: flaky.moderation,
                ..none
            },
        ),
        (
            "download truncated 2%",
            Faults {
                download_truncated: flaky.download_truncated,
                ..none
            },
        ),
        (
            "download failed 1%",
            Faults {
                download_failed: flaky.download_failed,
                ..none
            },
        ),
        (
            "429 storm 0.2%",
            Faults {
                rate_limit_storm: flaky.rate_limit_storm,
                ..none
            },
        ),
    ];
    let mut out = String::from(
        "### Each `flaky` fault alone (1,000 previews, 3,000/min, 40 concurrent)\n\n\
         | fault | done | wall ÷ floor | 429s | storms | paid twice |\n|---|---|---|---|---|---|\n",
    );
    for (name, faults) in cases {
        let config = SimConfig {
            creates_per_minute: Some(3000),
            max_concurrent: Some(40),
            faults,
            seed: 3,
            ..SimConfig::default()
        };
        let ran = run_darkroom(sims, config, tasks, Some(3000), 40).await;
        let row = format!(
            "| {name} | {} | {:.3} | {} | {} | {} |\n",
            ran.done,
            ran.wall / floor_seconds(tasks, 3000, 40, 1.0),
            ran.rate_limited,
            ran.storms,
            ran.paid_twice
        );
        eprint!("{row}");
        out.push_str(&row);
    }
    out
}
