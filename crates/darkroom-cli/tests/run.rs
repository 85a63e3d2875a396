//! `darkroom run` and `darkroom status` as users run them: the real binary, a real ledger file, and
//! the simulator (in-process with `--sim`, or as its own `darkroom sim` process).

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use support::{code, darkroom, text, write, SimProcess};

fn small_job(dir: &Path) {
    write(
        dir,
        "lamps.csv",
        "id,prompt,aspect_ratio,variants,sku\n\
         brass,A brass desk lamp on an oak desk,1:1,2,L-1\n\
         glass,A glass pendant lamp over a kitchen island,16:9,1,L-2\n",
    );
}

#[test]
fn run_with_sim_writes_every_image_and_a_second_run_spends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    small_job(dir.path());
    let first = darkroom(dir.path())
        .args(["run", "lamps.csv", "--sim", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&first), 0, "stderr: {}", text(&first.stderr));
    for name in ["brass-1.jpg", "brass-2.jpg", "glass.jpg"] {
        assert!(
            dir.path().join("out/lamps/preview").join(name).is_file(),
            "{name}"
        );
    }
    let stdout = text(&first.stdout);
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["counts"]["done"], 3);
    assert_eq!(summary["spent"], "0.012");
    let manifest = std::fs::read_to_string(dir.path().join("out/lamps/manifest.csv")).unwrap();
    assert!(
        manifest.lines().next().unwrap().ends_with(",sku,keep"),
        "{manifest}"
    );
    assert_eq!(manifest.lines().count(), 4);

    let second = darkroom(dir.path())
        .args(["run", "lamps.csv", "--sim", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&second), 0, "stderr: {}", text(&second.stderr));
    let summary: serde_json::Value =
        serde_json::from_str(text(&second.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(summary["counts"]["done"], 3);
    assert_eq!(summary["spent"], "0.012", "the resumed run bought nothing more");

    let status = darkroom(dir.path())
        .args(["status", "lamps", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&status), 0, "stderr: {}", text(&status.stderr));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["jobs"][0]["passes"][0]["counts"]["done"], 3);
}

#[test]
fn an_invalid_job_file_exits_2_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "bad.csv",
        "id,prompt,aspect_ratio\nok,A fine prompt here,1:1\nbad,A fine prompt too,5:4\n",
    );
    let output = darkroom(dir.path())
        .args(["run", "bad.csv", "--sim"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 2, "stderr: {}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("line 3"), "{stderr}");
    assert!(stderr.contains("5:4"), "{stderr}");
    assert!(
        !dir.path().join("out/bad/preview").exists()
            || std::fs::read_dir(dir.path().join("out/bad/preview"))
                .unwrap()
                .next()
                .is_none()
    );
}

#[test]
fn a_budget_smaller_than_the_job_exits_3_with_the_rest_skipped() {
    let dir = tempfile::tempdir().unwrap();
    small_job(dir.path());
    let output = darkroom(dir.path())
        .args(["run", "lamps.csv", "--sim", "--budget", "0.008"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 3, "stderr: {}", text(&output.stderr));
    let errors = std::fs::read_to_string(dir.path().join("out/lamps/errors.jsonl")).unwrap();
    assert_eq!(errors.lines().count(), 1, "{errors}");
    assert!(errors.contains("\"skipped\""), "{errors}");
}

#[test]
fn without_a_key_or_sim_the_run_refuses_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    small_job(dir.path());
    let output = darkroom(dir.path()).args(["run", "lamps.csv"]).output().unwrap();
    assert_eq!(code(&output), 2);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("LUMAAI_API_KEY"), "{stderr}");
    assert!(stderr.contains("--sim"), "{stderr}");
}

#[test]
fn the_api_key_never_reaches_the_ledger_the_outputs_or_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    small_job(dir.path());
    let secret = "luma-5ecret-k3y-that-must-not-leak";
    let sim = SimProcess::start(dir.path(), &["--api-key", secret]);
    let url = sim.base_url.clone();
    let output = darkroom(dir.path())
        .args(["run", "lamps.csv", "--base-url", &url])
        .env("LUMAAI_API_KEY", secret)
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    drop(sim);
    assert_eq!(code(&output), 0, "stderr: {}", text(&output.stderr));
    assert!(!text(&output.stderr).contains(secret));
    assert!(!text(&output.stdout).contains(secret));
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{} holds the key",
            entry.display()
        );
    }

    // And a wrong key is a refusal: exit 5.
    let sim = SimProcess::start(dir.path(), &["--api-key", secret]);
    let url = sim.base_url.clone();
    write(
        dir.path(),
        "more.csv",
        "id,prompt\nx,A walnut side table by a window\n",
    );
    let output = darkroom(dir.path())
        .args(["run", "more.csv", "--base-url", &url])
        .env("LUMAAI_API_KEY", "luma-wrong")
        .output()
        .unwrap();
    drop(sim);
    assert_eq!(code(&output), 5, "stderr: {}", text(&output.stderr));
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn a_second_run_of_the_same_job_is_refused_and_ctrl_c_leaves_it_resumable() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = String::from("id,prompt\n");
    for i in 0..30 {
        rows.push_str(&format!("vase-{i},A ceramic vase number {i} on a walnut table\n"));
    }
    write(dir.path(), "vases.csv", &rows);
    let sim = SimProcess::start(dir.path(), &["--time-scale", "4", "--rate-per-minute", "0"]);
    let url = sim.base_url.clone();
    let mut first = darkroom(dir.path())
        .args(["run", "vases.csv", "--base-url", &url, "--max-in-flight", "4"])
        .env("LUMAAI_API_KEY", "k")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let preview = dir.path().join("out/vases/preview");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_dir(&preview).map_or(0, Iterator::count) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first run made no image"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    let second = darkroom(dir.path())
        .args(["run", "vases.csv", "--base-url", &url])
        .env("LUMAAI_API_KEY", "k")
        .output()
        .unwrap();
    assert_eq!(code(&second), 2, "stderr: {}", text(&second.stderr));
    assert!(
        text(&second.stderr).contains("already running"),
        "{}",
        text(&second.stderr)
    );

    let status = Command::new("kill")
        .args(["-INT", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let interrupted = first.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut first.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(interrupted.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("run `darkroom run vases.csv` again to resume"),
        "{stderr}"
    );

    let third = darkroom(dir.path())
        .args(["run", "vases.csv", "--base-url", &url, "--json"])
        .env("LUMAAI_API_KEY", "k")
        .output()
        .unwrap();
    assert_eq!(code(&third), 0, "stderr: {}", text(&third.stderr));
    let summary: serde_json::Value =
        serde_json::from_str(text(&third.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(summary["counts"]["done"], 30);
    assert_eq!(summary["spent"], "0.12");
    assert_eq!(
        sim.net_billing(),
        30 * 4_000,
        "the simulator billed one image per task"
    );
    drop(sim);
}

#[test]
fn a_deadline_already_past_skips_the_pending_tasks_and_exits_6() {
    let dir = tempfile::tempdir().unwrap();
    small_job(dir.path());
    let output = darkroom(dir.path())
        .args(["run", "lamps.csv", "--sim", "--deadline", "2020-01-01T00:00:00Z"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 6, "stderr: {}", text(&output.stderr));
    let errors = std::fs::read_to_string(dir.path().join("out/lamps/errors.jsonl")).unwrap();
    assert_eq!(
        errors.lines().filter(|l| l.contains("\"deadline\"")).count(),
        3,
        "{errors}"
    );
    // The deadline is kept for the resumed run unless dropped.
    let again = darkroom(dir.path())
        .args(["run", "lamps.csv", "--sim"])
        .output()
        .unwrap();
    assert_eq!(code(&again), 6);
    let finished = darkroom(dir.path())
        .args(["run", "lamps.csv", "--sim", "--no-deadline"])
        .output()
        .unwrap();
    assert_eq!(code(&finished), 0, "stderr: {}", text(&finished.stderr));
    let bad = darkroom(dir.path())
        .args(["run", "lamps.csv", "--sim", "--max-duration", "soon"])
        .output()
        .unwrap();
    assert_eq!(code(&bad), 2);
    assert!(
        text(&bad.stderr).contains("not a duration"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn the_end_of_a_run_is_notified_with_a_standard_webhooks_signature_python_can_verify() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    small_job(dir.path());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let receiver = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = stream.read(&mut buf).unwrap();
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if request.len() >= end + 4 + length {
                    stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .unwrap();
                    return text;
                }
            }
            if n == 0 {
                return text;
            }
        }
    });
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let output = darkroom(dir.path())
        .args(["run", "lamps.csv", "--sim", "--notify", &url])
        .env("DARKROOM_NOTIFY_SECRET", secret)
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "stderr: {}", text(&output.stderr));
    let request = receiver.join().unwrap();
    let (head, body) = request.split_once("\r\n\r\n").unwrap();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap()
    };
    let payload: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(payload["type"], "run_finished");
    assert_eq!(payload["data"]["counts"]["done"], 3);
    let script = "import base64,hashlib,hmac,sys\n\
                  key = base64.b64decode(sys.argv[1].split('_', 1)[1])\n\
                  signed = (sys.argv[2] + '.' + sys.argv[3] + '.').encode() + sys.stdin.buffer.read()\n\
                  print('v1,' + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode())";
    let mut python = Command::new("python3")
        .args([
            "-c",
            script,
            secret,
            &header("webhook-id"),
            &header("webhook-timestamp"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    python.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let expected = String::from_utf8(python.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(header("webhook-signature"), expected.trim());
}
