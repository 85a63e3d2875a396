//! Previews to finals as users do it: `darkroom run` for previews, then `darkroom promote`,
//! `darkroom review` and `darkroom report`, with the real binary, a real ledger and a `darkroom sim`
//! process.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use std::path::Path;
use std::process::Stdio;

use darkroom_testkit::exiftool::{tags, text as tag};
use support::{against, code, first_url, http, previews, text, write, Killed, SimProcess};

const FLASH: i64 = 4_000;
const PHOTON: i64 = 15_000;

fn results(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("out/vases/results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Fills `keep` in manifest.csv, in place, for the rows whose id is in `keep`.
fn keep_in_manifest(dir: &Path, keep: &[&str]) -> std::path::PathBuf {
    let path = dir.join("out/vases/manifest.csv");
    let manifest = std::fs::read_to_string(&path).unwrap();
    let mut out = String::new();
    for (i, line) in manifest.lines().enumerate() {
        let id = line.split(',').next().unwrap();
        // `keep` is the last column, empty as written.
        let cell = if i > 0 && keep.contains(&id) { "Yes" } else { "" };
        out.push_str(&format!("{line}{cell}\n"));
    }
    std::fs::write(&path, out).unwrap();
    path
}

#[test]
fn promote_makes_finals_from_the_kept_previews_with_the_preview_as_reference() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimProcess::start(dir.path(), &[]);
    let run = previews(dir.path(), &sim);
    assert_eq!(code(&run), 0, "{}", text(&run.stderr));
    assert!(
        text(&run.stderr).contains("next: darkroom review vases"),
        "{}",
        text(&run.stderr)
    );
    assert!(
        dir.path().join("out/vases/report.html").is_file(),
        "the run refreshes the report"
    );
    let preview_urls: std::collections::HashMap<String, String> = results(dir.path())
        .iter()
        .map(|r| {
            let generation = sim.generation(r["generation_id"].as_str().unwrap());
            (
                r["id"].as_str().unwrap().to_string(),
                generation["assets"]["image"].as_str().unwrap().to_string(),
            )
        })
        .collect();

    let select = keep_in_manifest(dir.path(), &["tall-2", "jar"]);
    let promote = against(dir.path(), &sim)
        .args(["promote", "vases", "--select"])
        .arg(&select)
        .args(["--budget", "1"])
        .output()
        .unwrap();
    assert_eq!(code(&promote), 0, "{}", text(&promote.stderr));
    assert!(dir.path().join("out/vases/final/tall-2.jpg").is_file());
    assert!(dir.path().join("out/vases/final/jar.jpg").is_file());
    assert!(
        !dir.path().join("out/vases/final/bowl.jpg").exists(),
        "only kept previews are promoted"
    );

    let finals: Vec<_> = results(dir.path())
        .into_iter()
        .filter(|r| r["pass"] == "final")
        .collect();
    assert_eq!(finals.len(), 2);
    for final_ in &finals {
        let id = final_["id"].as_str().unwrap();
        assert_eq!(
            final_["preview"], id,
            "results.jsonl links the final to its preview"
        );
        assert_eq!(final_["model"], "photon-1");
        // What the upstream was asked for: photon-1, the same prompt, and the preview's image.
        let generation = sim.generation(final_["generation_id"].as_str().unwrap());
        assert_eq!(generation["request"]["model"], "photon-1");
        assert_eq!(
            generation["request"]["modify_image_ref"]["url"],
            preview_urls[id].as_str()
        );
        assert_eq!(generation["request"]["prompt"], final_["prompt"]);
    }
    assert_eq!(sim.net_billing(), 4 * FLASH + 2 * PHOTON);
    // The run rewrote manifest.csv with the finals in it, and kept what the user wrote in `keep`.
    let manifest = std::fs::read_to_string(&select).unwrap();
    assert_eq!(manifest.lines().count(), 1 + 4 + 2, "{manifest}");
    let kept: Vec<&str> = manifest.lines().filter(|l| l.ends_with(",Yes")).collect();
    assert_eq!(kept.len(), 2, "{manifest}");
    assert!(kept.iter().all(|l| l.contains(",preview,")), "{manifest}");

    // The same command again resumes: nothing new is bought.
    let again = against(dir.path(), &sim)
        .args(["promote", "vases", "--select"])
        .arg(&select)
        .output()
        .unwrap();
    assert_eq!(code(&again), 0, "{}", text(&again.stderr));
    assert!(
        text(&again.stderr)
            .contains("promoting: 0 final(s) to make with photon-1 for $0.00, 0 in flight from an earlier run, 2 already made"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(sim.net_billing(), 4 * FLASH + 2 * PHOTON);
}

#[test]
fn ids_that_match_no_preview_are_listed_and_nothing_is_spent() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimProcess::start(dir.path(), &[]);
    assert_eq!(code(&previews(dir.path(), &sim)), 0);
    let billed = sim.net_billing();
    let select = write(dir.path(), "select.csv", "id\ntall-1\ntal-2\nvase-9\n");
    let promote = against(dir.path(), &sim)
        .args(["promote", "vases", "--select"])
        .arg(&select)
        .output()
        .unwrap();
    assert_eq!(code(&promote), 2, "{}", text(&promote.stderr));
    let stderr = text(&promote.stderr);
    assert!(stderr.contains("tal-2: no preview with this id"), "{stderr}");
    assert!(stderr.contains("vase-9: no preview with this id"), "{stderr}");
    assert!(stderr.contains("nothing was spent"), "{stderr}");
    assert_eq!(sim.net_billing(), billed);
    assert!(!dir.path().join("out/vases/final").exists());

    // A select file that chooses nothing, and one without an id column, are refused the same way.
    let none = write(dir.path(), "none.csv", "id,keep\ntall-1,\njar,no\n");
    let output = against(dir.path(), &sim)
        .args(["promote", "vases", "--select"])
        .arg(&none)
        .output()
        .unwrap();
    assert_eq!(code(&output), 2, "{}", text(&output.stderr));
    let no_id = write(dir.path(), "no-id.csv", "name,keep\ntall-1,y\n");
    let output = against(dir.path(), &sim)
        .args(["promote", "vases", "--select"])
        .arg(&no_id)
        .output()
        .unwrap();
    assert_eq!(code(&output), 2);
    assert!(
        text(&output.stderr).contains("no `id` column"),
        "{}",
        text(&output.stderr)
    );
    let output = against(dir.path(), &sim)
        .args(["promote", "no-such-job", "--all"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 2);
    assert!(
        text(&output.stderr).contains("no job named"),
        "{}",
        text(&output.stderr)
    );
    assert_eq!(sim.net_billing(), billed);
}

#[test]
fn a_preview_whose_url_expired_is_finalized_from_the_prompt_alone_and_the_report_says_so() {
    let dir = tempfile::tempdir().unwrap();
    {
        let first = SimProcess::start(dir.path(), &[]);
        assert_eq!(code(&previews(dir.path(), &first)), 0);
    } // That simulator is gone, and with it every URL it served.
    let second = SimProcess::start(dir.path(), &[]);
    let promote = against(dir.path(), &second)
        .args(["promote", "vases", "--all"])
        .output()
        .unwrap();
    assert_eq!(code(&promote), 0, "{}", text(&promote.stderr));
    assert!(
        text(&promote.stderr).contains("no longer resolves"),
        "{}",
        text(&promote.stderr)
    );
    let finals: Vec<_> = results(dir.path())
        .into_iter()
        .filter(|r| r["pass"] == "final")
        .collect();
    assert_eq!(finals.len(), 4);
    for final_ in &finals {
        let generation = second.generation(final_["generation_id"].as_str().unwrap());
        assert!(
            generation["request"]["modify_image_ref"].is_null(),
            "{generation}"
        );
        assert!(final_["reference"]
            .as_str()
            .unwrap()
            .contains("no longer resolves"));
        // Made from the prompt alone: the file names no source image it was not made from.
        let found = tags(&dir.path().join(final_["path"].as_str().unwrap()));
        assert_eq!(
            tag(&found, "XMP-darkroom:Prompt").as_deref(),
            final_["prompt"].as_str()
        );
        assert_eq!(tag(&found, "XMP-darkroom:Source"), None, "{found:?}");
        assert_eq!(tag(&found, "XMP-darkroom:SourceGenerationId"), None, "{found:?}");
    }
    let report = against(dir.path(), &second)
        .args(["report", "vases"])
        .output()
        .unwrap();
    assert_eq!(code(&report), 0);
    assert!(
        text(&report.stdout).contains("4 final(s) made from the prompt alone"),
        "{}",
        text(&report.stdout)
    );
}

#[test]
fn the_report_counts_spend_by_model_and_its_html_stands_alone() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimProcess::start(dir.path(), &[]);
    assert_eq!(code(&previews(dir.path(), &sim)), 0);
    let promote = against(dir.path(), &sim)
        .args(["promote", "vases", "--select"])
        .arg(write(dir.path(), "one.csv", "id\nbowl\n"))
        .output()
        .unwrap();
    assert_eq!(code(&promote), 0, "{}", text(&promote.stderr));

    let json = against(dir.path(), &sim)
        .args(["report", "vases", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&json), 0, "{}", text(&json.stderr));
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["version"], 1);
    assert_eq!(report["spent_micros"], 4 * FLASH + PHOTON);
    let passes = report["passes"].as_array().unwrap();
    assert_eq!(passes[0]["pass"], "preview");
    assert_eq!(passes[0]["counts"]["done"], 4);
    assert_eq!(passes[0]["estimate_micros"], 4 * FLASH);
    assert_eq!(passes[1]["pass"], "final");
    assert_eq!(passes[1]["counts"]["done"], 1);
    assert_eq!(passes[1]["latency"][0]["model"], "photon-1");
    let by_model = report["spend_by_model"].as_array().unwrap();
    assert!(by_model
        .iter()
        .any(|m| m["model"] == "photon-flash-1" && m["charged_micros"] == 4 * FLASH && m["charges"] == 4));
    assert!(by_model
        .iter()
        .any(|m| m["model"] == "photon-1" && m["charged_micros"] == PHOTON));
    assert_eq!(
        report["spend_over_time"].as_array().unwrap().last().unwrap()[1],
        4 * FLASH + PHOTON
    );
    let groups: Vec<&str> = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(groups, ["ceramics", "glass"]);

    let html = against(dir.path(), &sim)
        .args(["report", "vases", "--html", "report.html"])
        .output()
        .unwrap();
    assert_eq!(code(&html), 0, "{}", text(&html.stderr));
    let page = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(page.contains("<svg class=\"chart\""));
    // Four previews and one final, embedded: the file works anywhere, offline.
    assert_eq!(page.matches("src=\"data:image/jpeg;base64,").count(), 5);
    assert!(
        !page.contains("src=\"http"),
        "nothing is fetched from the network"
    );
}

/// A review server on a free port, stopped when dropped.
fn start_review(dir: &Path, sim: &SimProcess) -> (Killed, String) {
    let mut child = against(dir, sim)
        .args(["review", "vases", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = first_url(child.stdout.take().unwrap());
    (Killed(child), url.trim_end_matches('/').to_string())
}

#[test]
fn the_review_page_spends_only_with_its_token_and_only_for_its_own_host() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimProcess::start(dir.path(), &[]);
    assert_eq!(code(&previews(dir.path(), &sim)), 0);
    let billed = sim.net_billing();
    let (_server, url) = start_review(dir.path(), &sim);

    let (status, page) = http(&url, "GET", "/", &[], "");
    assert_eq!(status, 200);
    let token = page
        .split("name=\"darkroom-token\" content=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(token.len(), 32);
    let body = r#"{"ids":["jar"]}"#;
    let json = ("Content-Type", "application/json");

    // Another site can't spend: no token, a wrong token, or another host's name all get 403.
    let (status, _) = http(&url, "POST", "/api/promote", &[json], body);
    assert_eq!(status, 403);
    let (status, _) = http(
        &url,
        "POST",
        "/api/promote",
        &[json, ("X-Darkroom-Token", "0123456789abcdef0123456789abcdef")],
        body,
    );
    assert_eq!(status, 403);
    let (status, _) = http(
        &url,
        "POST",
        "/api/promote",
        &[
            json,
            ("X-Darkroom-Token", &token),
            ("Host", "attacker.example:80"),
        ],
        body,
    );
    assert_eq!(status, 403);
    let (status, _) = http(&url, "GET", "/api/state", &[("Host", "attacker.example")], "");
    assert_eq!(status, 403);
    assert_eq!(sim.net_billing(), billed);

    // An id that is no preview is refused with its name, and nothing is spent.
    let (status, answer) = http(
        &url,
        "POST",
        "/api/promote",
        &[json, ("X-Darkroom-Token", &token)],
        r#"{"ids":["jar","urn"]}"#,
    );
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("urn: no preview"), "{answer}");
    assert_eq!(sim.net_billing(), billed);

    // Thumbnails are small JPEGs of the previews; unknown ones are 404s.
    let (status, _) = http(&url, "GET", "/thumb/preview/jar", &[], "");
    assert_eq!(status, 200);
    let (status, _) = http(&url, "GET", "/thumb/preview/..%2F..%2Fvases.csv", &[], "");
    assert_eq!(status, 404);

    // With the token: the export is written and the promotion runs.
    let (status, answer) = http(
        &url,
        "POST",
        "/api/export",
        &[json, ("X-Darkroom-Token", &token)],
        body,
    );
    assert_eq!(status, 200, "{answer}");
    let export = std::fs::read_to_string(dir.path().join("out/vases/select.csv")).unwrap();
    assert_eq!(export, "id,pass,keep\njar,preview,y\n");
    let (status, answer) = http(
        &url,
        "POST",
        "/api/promote",
        &[json, ("X-Darkroom-Token", &token)],
        body,
    );
    assert_eq!(status, 202, "{answer}");
    let done = (0..600).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let (_, state) = http(&url, "GET", "/api/state", &[], "");
        let state: serde_json::Value = serde_json::from_str(&state).unwrap();
        state["running"] == false && state["message"].as_str().is_some_and(|m| m.starts_with("finals"))
    });
    assert!(done, "the final pass finished");
    assert!(dir.path().join("out/vases/final/jar.jpg").is_file());
    assert_eq!(sim.net_billing(), billed + PHOTON);
}

#[test]
fn a_blocked_preview_cannot_be_promoted_and_the_page_shows_it_blocked() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimProcess::start(dir.path(), &["--moderation", "1"]);
    let run = previews(dir.path(), &sim);
    assert_eq!(
        code(&run),
        1,
        "blocked tasks make exit code 1: {}",
        text(&run.stderr)
    );
    let billed = sim.net_billing();
    let promote = against(dir.path(), &sim)
        .args(["promote", "vases", "--select"])
        .arg(write(dir.path(), "one.csv", "id,keep\njar,x\n"))
        .output()
        .unwrap();
    assert_eq!(code(&promote), 2, "{}", text(&promote.stderr));
    assert!(
        text(&promote.stderr).contains("jar: the preview is blocked"),
        "{}",
        text(&promote.stderr)
    );
    let all = against(dir.path(), &sim)
        .args(["promote", "vases", "--all"])
        .output()
        .unwrap();
    assert_eq!(code(&all), 2, "no done preview: {}", text(&all.stderr));
    assert_eq!(sim.net_billing(), billed);

    let (_server, url) = start_review(dir.path(), &sim);
    let (_, state) = http(&url, "GET", "/api/state", &[], "");
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    let jar = state["groups"][1]["tiles"][0]["preview"].clone();
    assert_eq!(jar["state"], "blocked", "{state}");
    assert!(
        !jar["reason"].as_str().unwrap().is_empty(),
        "the page shows why: {jar}"
    );
}

#[test]
fn previews_and_finals_each_with_their_own_built_in_simulator_share_a_ledger() {
    // Each --sim starts a new simulator with the same seed: its generation ids must still never
    // repeat one an earlier simulator gave, or the ledger would take a new generation for an old one.
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "vases.csv",
        "id,prompt\ntall,A tall ceramic vase with dried pampas grass\nbowl,A shallow stoneware bowl of lemons\n",
    );
    let run = support::darkroom(dir.path())
        .args(["run", "vases.csv", "--sim"])
        .output()
        .unwrap();
    assert_eq!(code(&run), 0, "{}", text(&run.stderr));
    let promote = support::darkroom(dir.path())
        .args(["promote", "vases", "--all", "--sim"])
        .output()
        .unwrap();
    assert_eq!(code(&promote), 0, "{}", text(&promote.stderr));
    assert!(
        !text(&promote.stderr).contains("reconciling"),
        "{}",
        text(&promote.stderr)
    );
    let finals: Vec<_> = results(dir.path())
        .into_iter()
        .filter(|r| r["pass"] == "final")
        .collect();
    assert_eq!(finals.len(), 2);
    assert!(finals.iter().all(|f| f["attempts"] == 1), "{finals:?}");
}

#[test]
fn a_promotion_makes_only_its_own_selection_and_leaves_another_selections_unmade_finals_alone() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimProcess::start(dir.path(), &[]);
    assert_eq!(code(&previews(dir.path(), &sim)), 0);
    let previews_billed = sim.net_billing();
    let tall = write(dir.path(), "tall.csv", "id\ntall-1\ntall-2\n");
    let bowl = write(dir.path(), "bowl.csv", "id\nbowl\n");
    let promote = |select: &Path, budget: &str| {
        against(dir.path(), &sim)
            .args(["promote", "vases", "--select"])
            .arg(select)
            .args(["--budget", budget])
            .output()
            .unwrap()
    };
    // Room for one of the two tall finals: the other is skipped for the budget.
    let first = promote(&tall, "0.015");
    assert_eq!(code(&first), 3, "{}", text(&first.stderr));
    assert!(
        text(&first.stderr).contains("promoting: 2 final(s) to make with photon-1 for $0.03"),
        "{}",
        text(&first.stderr)
    );
    assert_eq!(sim.net_billing(), previews_billed + PHOTON);

    // Another selection with a larger budget makes its one final, not the tall one left over.
    let second = promote(&bowl, "1");
    assert_eq!(code(&second), 0, "{}", text(&second.stderr));
    assert!(
        text(&second.stderr).contains("promoting: 1 final(s) to make with photon-1 for $0.015"),
        "{}",
        text(&second.stderr)
    );
    assert_eq!(sim.net_billing(), previews_billed + 2 * PHOTON);
    assert!(!dir.path().join("out/vases/final/tall-2.jpg").exists());

    // The first selection again resends its skipped final, announced as one to make.
    let third = promote(&tall, "1");
    assert_eq!(code(&third), 0, "{}", text(&third.stderr));
    assert!(
        text(&third.stderr).contains("promoting: 1 final(s) to make with photon-1 for $0.015, 0 in flight from an earlier run, 1 already made"),
        "{}",
        text(&third.stderr)
    );
    assert_eq!(sim.net_billing(), previews_billed + 3 * PHOTON);
    assert!(dir.path().join("out/vases/final/tall-2.jpg").is_file());
}

#[test]
fn select_file_ids_match_the_job_ignoring_letter_case_and_each_preview_counts_once() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimProcess::start(dir.path(), &[]);
    assert_eq!(code(&previews(dir.path(), &sim)), 0);
    // Ids typed by hand or edited in a spreadsheet: another case, and the same preview twice.
    let select = write(dir.path(), "select.csv", "id\nTALL-2\ntall-2\nJar\n");
    let promote = against(dir.path(), &sim)
        .args(["promote", "vases", "--select"])
        .arg(&select)
        .args(["--budget", "1"])
        .output()
        .unwrap();
    assert_eq!(code(&promote), 0, "{}", text(&promote.stderr));
    assert!(
        text(&promote.stderr).contains("2 final(s) to make with photon-1"),
        "{}",
        text(&promote.stderr)
    );
    assert!(dir.path().join("out/vases/final/tall-2.jpg").is_file());
    assert!(dir.path().join("out/vases/final/jar.jpg").is_file());
    assert_eq!(sim.net_billing(), 4 * FLASH + 2 * PHOTON);

    // Export and reframe read select files the same way.
    let export = against(dir.path(), &sim)
        .args(["export", "vases", "--select"])
        .arg(&select)
        .output()
        .unwrap();
    assert_eq!(code(&export), 0, "{}", text(&export.stderr));
    let mut exported: Vec<String> = std::fs::read_dir(dir.path().join("out/vases/export/final"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".jpg"))
        .collect();
    exported.sort();
    assert_eq!(exported, ["jar.jpg", "tall-2.jpg"]);
    let reframe = against(dir.path(), &sim)
        .args(["reframe", "vases", "--to", "1:1", "--select"])
        .arg(&select)
        .args(["--budget", "1"])
        .output()
        .unwrap();
    assert_eq!(code(&reframe), 0, "{}", text(&reframe.stderr));
    assert!(
        text(&reframe.stderr).contains("reframing: 2 image(s) to make"),
        "{}",
        text(&reframe.stderr)
    );
}
