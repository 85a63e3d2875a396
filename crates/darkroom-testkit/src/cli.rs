//! The real `darkroom` binary as a user runs it, with nothing inherited from the caller's
//! environment, a `darkroom sim` process beside it, and plain-socket HTTP to talk to the servers
//! it starts.
//!
//! The binary's path is only known to the CLI crate's tests (`env!("CARGO_BIN_EXE_darkroom")`), so
//! every function here takes it.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

/// Variables of the caller's environment that would change what the binary does; removed from
/// every command (and every `DARKROOM_*` variable with them).
const INHERITED: [&str; 7] = [
    "LUMAAI_API_KEY",
    "LUMAAI_BASE_URL",
    "REPLICATE_API_TOKEN",
    "REPLICATE_BASE_URL",
    "FAL_KEY",
    "FAL_KEY_ID",
    "FAL_KEY_SECRET",
];

/// The binary at `bin`, run in `dir`, with a clean environment: no key, base URL or `DARKROOM_*`
/// setting inherited, `NO_COLOR=1`, and `HOME` and the XDG directories inside `dir/.home`, so
/// nothing of the caller's home is read or written.
///
/// # Panics
/// If `dir/.home` cannot be created.
pub fn darkroom(bin: &str, dir: &Path) -> Command {
    let home = dir.join(".home");
    for sub in [".config", ".cache", ".local/share", ".local/state"] {
        std::fs::create_dir_all(home.join(sub)).expect("the temporary home is created");
    }
    let mut command = Command::new(bin);
    command
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("XDG_STATE_HOME", home.join(".local/state"));
    for key in INHERITED {
        command.env_remove(key);
    }
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("DARKROOM_") {
            command.env_remove(key);
        }
    }
    command
}

/// [`darkroom`] pointed at a simulator process: `LUMAAI_API_KEY=test-key` and its base URL.
pub fn against(bin: &str, dir: &Path, sim: &SimProcess) -> Command {
    let mut command = darkroom(bin, dir);
    command
        .env("LUMAAI_API_KEY", "test-key")
        .env("LUMAAI_BASE_URL", &sim.base_url);
    command
}

/// Bytes a process wrote, as text (invalid UTF-8 replaced).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A finished process's exit code; -1 if a signal ended it.
pub fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

/// A child process killed when dropped, so a failing test leaves nothing running.
#[derive(Debug)]
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `darkroom sim` process on a free loopback port, killed when dropped.
#[derive(Debug)]
pub struct SimProcess {
    /// Its base URL, as it printed it (`http://127.0.0.1:PORT/...`).
    pub base_url: String,
    _child: Killed,
}

impl SimProcess {
    /// Starts `bin sim --port 0 EXTRA...` in `dir` with [`darkroom`]'s environment and waits for
    /// the URL it prints.
    ///
    /// # Panics
    /// If it cannot start or ends before printing a URL.
    pub fn start(bin: &str, dir: &Path, extra: &[&str]) -> SimProcess {
        let mut child = darkroom(bin, dir)
            .args(["sim", "--port", "0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("darkroom sim starts");
        let stdout = child.stdout.take().expect("its stdout is piped");
        let child = Killed(child);
        let base_url = first_url(stdout);
        SimProcess {
            base_url,
            _child: child,
        }
    }

    /// The simulator's own record of what the account paid, net of refunds, in micro-dollars.
    pub fn net_billing(&self) -> i64 {
        let (_, body) = http(&self.base_url, "GET", "/sim/billing", &[], "");
        let billing: serde_json::Value = serde_json::from_str(&body).expect("billing is JSON");
        billing["net_micros"].as_i64().expect("billing has net_micros")
    }

    /// Creates an image generation on the simulator's account with the JSON request `body`, as
    /// another client of the account would. Returns the HTTP status (201 when accepted).
    pub fn create_generation(&self, body: &str) -> u16 {
        let path = format!("{}/generations/image", path_of(&self.base_url));
        let headers = [
            ("Authorization", "Bearer test-key"),
            ("Content-Type", "application/json"),
        ];
        http(&self.base_url, "POST", &path, &headers, body).0
    }

    /// A generation as the simulator serves it (`GET .../generations/ID`), asserting a 200.
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
        serde_json::from_str(&body).expect("a generation is JSON")
    }
}

/// Reads lines from a child's stdout until one holds an `http://` URL, and returns the URL.
///
/// # Panics
/// If the stream ends first.
pub fn first_url(stdout: impl Read) -> String {
    let mut reader = BufReader::new(stdout);
    loop {
        let mut line = String::new();
        let read = reader.read_line(&mut line).expect("stdout reads");
        assert!(read > 0, "the process printed no URL");
        if let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) {
            return url.to_string();
        }
    }
}

/// The path part of `url` (`/dream-machine/v1` of `http://127.0.0.1:8080/dream-machine/v1`), or
/// the empty string.
pub fn path_of(url: &str) -> String {
    let rest = url.trim_start_matches("http://");
    rest.find('/').map_or(String::new(), |i| rest[i..].to_string())
}

/// One HTTP/1.1 request over a plain socket to the server at `url`'s authority (a `Host` header
/// is added unless `headers` has one; a chunked body is decoded). Returns the status and the body.
///
/// # Panics
/// If the server cannot be reached or the answer is not HTTP.
pub fn http(url: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let authority = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    let mut stream = std::net::TcpStream::connect(authority).expect("the server accepts");
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
    stream.write_all(request.as_bytes()).expect("the request is sent");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("the answer is read");
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("an HTTP status line");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP head");
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

/// `GET path` on the server at `url`, the body parsed as JSON.
pub fn get_json(url: &str, path: &str) -> serde_json::Value {
    let (_, body) = http(url, "GET", path, &[], "");
    serde_json::from_str(&body).expect("the answer is JSON")
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
