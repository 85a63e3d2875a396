//! What the CLI tests share: the real binary with a clean environment, a `darkroom sim` process on
//! a free loopback port (stopped when dropped), and plain-socket HTTP to talk to servers.

#![allow(dead_code)] // Each test file uses its own part of this.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The `darkroom` binary, run in `dir`, with no key, base URL or `DARKROOM_*` setting inherited.
pub fn darkroom(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_darkroom"));
    command
        .current_dir(dir)
        .env_remove("LUMAAI_API_KEY")
        .env_remove("LUMAAI_BASE_URL")
        .env("NO_COLOR", "1");
    for (key, _) in std::env::vars() {
        if key.starts_with("DARKROOM_") {
            command.env_remove(key);
        }
    }
    command
}

/// `darkroom` pointed at a simulator process.
pub fn against(dir: &Path, sim: &SimProcess) -> Command {
    let mut command = darkroom(dir);
    command
        .env("LUMAAI_API_KEY", "test-key")
        .env("LUMAAI_BASE_URL", &sim.base_url);
    command
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

/// A child process killed when dropped, so a failing test leaves nothing running.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `darkroom sim` process on a free port.
pub struct SimProcess {
    pub base_url: String,
    _child: Killed,
}

impl SimProcess {
    pub fn start(dir: &Path, extra: &[&str]) -> SimProcess {
        let mut child = darkroom(dir)
            .args(["sim", "--port", "0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let base_url = first_url(stdout);
        SimProcess {
            base_url,
            _child: Killed(child),
        }
    }

    /// The simulator's own record of what the account paid, net of refunds.
    pub fn net_billing(&self) -> i64 {
        let (_, body) = http(&self.base_url, "GET", "/sim/billing", &[], "");
        let billing: serde_json::Value = serde_json::from_str(&body).unwrap();
        billing["net_micros"].as_i64().unwrap()
    }

    /// A generation as the simulator serves it.
    pub fn generation(&self, id: &str) -> serde_json::Value {
        let path = format!("{}/generations/{id}", path_of(&self.base_url));
        let (status, body) = http(
            &self.base_url,
            "GET",
            &path,
            &[("Authorization", "Bearer test-key")],
            "",
        );
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }
}

/// Reads lines from a child's stdout until one holds an `http://` URL.
pub fn first_url(stdout: impl Read) -> String {
    let mut reader = BufReader::new(stdout);
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the process printed no URL"
        );
        if let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) {
            return url.to_string();
        }
    }
}

fn path_of(url: &str) -> String {
    let rest = url.trim_start_matches("http://");
    rest.find('/').map_or(String::new(), |i| rest[i..].to_string())
}

/// One HTTP/1.1 request over a plain socket to the server at `url`'s authority. Returns the status
/// and the body.
pub fn http(url: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let authority = url.trim_start_matches("http://").split('/').next().unwrap();
    let mut stream = std::net::TcpStream::connect(authority).unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {authority}\r\n"));
    }
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// Runs a preview job of `rows` rows (2 variants of the first) against the simulator.
pub fn previews(dir: &Path, sim: &SimProcess) -> Output {
    write(
        dir,
        "vases.csv",
        "id,prompt,aspect_ratio,variants,group\n\
         tall,A tall ceramic vase with dried pampas grass,3:4,2,ceramics\n\
         bowl,A shallow stoneware bowl of lemons on linen,1:1,1,ceramics\n\
         jar,A glass storage jar of coffee beans on a shelf,4:3,1,glass\n",
    );
    against(dir, sim).args(["run", "vases.csv"]).output().unwrap()
}
