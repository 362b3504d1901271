//! The mosquitto command-line clients (`mosquitto_pub`, `mosquitto_sub`) as
//! child processes: an independent MQTT implementation to check the broker against.
//!
//! Subscribers run with `-d`, so their stdout tells when CONNACK and SUBACK
//! arrived (tests wait for those lines instead of sleeping), and with a `-F`
//! format whose lines start with [`MSG`], so received messages are easy to pick
//! out. `stdbuf -oL` makes the clients flush each line into the pipe as it is
//! written. Every child is killed when its handle is dropped.

use std::net::SocketAddr;
use std::process::{ExitStatus, Output, Stdio};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use super::within;

/// Prefix of the lines a subscriber prints for each message it receives.
pub const MSG: &str = "MSG|";

/// Splits `line` at whitespace into arguments (for argument lists without spaces inside).
pub fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_owned).collect()
}

/// `-h`/`-p` arguments for a broker address.
pub fn host_port(addr: SocketAddr) -> Vec<String> {
    vec![
        "-h".into(),
        addr.ip().to_string(),
        "-p".into(),
        addr.port().to_string(),
    ]
}

/// Turns `&["-t", "x"]`-style slices into owned arguments.
pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// A running command-line client whose output is read line by line.
pub struct Cli {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    /// Every line read so far (stderr lines prefixed), shown when a wait fails.
    transcript: Vec<String>,
}

/// Forwards each line of `stream` to `tx`, prefixed with `prefix`.
fn forward_lines(
    stream: impl AsyncRead + Unpin + Send + 'static,
    prefix: &'static str,
    tx: mpsc::UnboundedSender<String>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(format!("{prefix}{line}")).is_err() {
                return;
            }
        }
    });
}

fn command(program: &str, args: &[String]) -> Command {
    let mut command = Command::new("stdbuf");
    command
        .arg("-oL")
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

impl Cli {
    /// Starts `program` (with `-d` added) and reads its output in the background.
    pub fn spawn(program: &str, args: &[String]) -> Cli {
        let mut all = vec!["-d".to_owned()];
        all.extend_from_slice(args);
        let mut child = command(program, &all)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run {program} (run `make deps`): {err}"));
        let (tx, lines) = mpsc::unbounded_channel();
        forward_lines(child.stdout.take().expect("piped stdout"), "", tx.clone());
        forward_lines(child.stderr.take().expect("piped stderr"), "stderr: ", tx);
        Cli {
            child,
            lines,
            transcript: Vec::new(),
        }
    }

    /// `mosquitto_sub` printing each message as `MSG|<format>`.
    pub fn sub(addr: SocketAddr, format: &str, args: &[String]) -> Cli {
        let mut all = host_port(addr);
        all.extend(["-F".to_owned(), format!("{MSG}{format}")]);
        all.extend_from_slice(args);
        Cli::spawn("mosquitto_sub", &all)
    }

    /// The next line satisfying `pick`, failing with the transcript if the
    /// client exits or takes too long.
    pub async fn line(&mut self, what: &str, mut pick: impl FnMut(&str) -> bool) -> String {
        let found = tokio::time::timeout(super::WAIT, async {
            while let Some(line) = self.lines.recv().await {
                self.transcript.push(line.clone());
                if pick(&line) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            Ok(None) => panic!(
                "client ended before {what}; output:\n{}",
                self.transcript.join("\n")
            ),
            Err(_) => panic!(
                "timed out waiting for {what}; output:\n{}",
                self.transcript.join("\n")
            ),
        }
    }

    /// Waits for CONNACK and returns its code as mosquitto prints it.
    pub async fn connack(&mut self) -> u8 {
        let line = self
            .line("CONNACK", |l| l.contains("received CONNACK"))
            .await;
        let code = line
            .rsplit('(')
            .next()
            .and_then(|rest| rest.strip_suffix(')'));
        code.and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("unexpected CONNACK line {line:?}"))
    }

    /// Waits for SUBACK and returns the granted QoS / reason code of each filter.
    pub async fn subscribed(&mut self) -> Vec<u8> {
        let line = self
            .line("SUBACK", |l| l.starts_with("Subscribed (mid:"))
            .await;
        let codes = line
            .split_once("): ")
            .map(|(_, codes)| codes)
            .unwrap_or_default();
        codes
            .split(", ")
            .map(|code| {
                code.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("unexpected SUBACK line {line:?}"))
            })
            .collect()
    }

    /// The next received message, without the [`MSG`] prefix.
    pub async fn message(&mut self) -> String {
        let line = self.line("a message", |l| l.starts_with(MSG)).await;
        line[MSG.len()..].to_owned()
    }

    /// Kills the client without letting it say goodbye (its will is due).
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill client");
    }

    /// Waits for the client to exit by itself, then for the end of its output.
    pub async fn finish(mut self) -> Ended {
        let status = within("the client to exit", self.child.wait())
            .await
            .expect("wait for client");
        let mut messages = Vec::new();
        while let Some(line) = within("the client's output to end", self.lines.recv()).await {
            if let Some(message) = line.strip_prefix(MSG) {
                messages.push(message.to_owned());
            }
            self.transcript.push(line);
        }
        Ended {
            status,
            messages,
            output: self.transcript,
        }
    }

    /// Everything the client printed so far.
    pub fn transcript(&self) -> &[String] {
        &self.transcript
    }
}

/// A client that has exited.
#[derive(Debug)]
pub struct Ended {
    pub status: ExitStatus,
    /// Messages printed after the last wait on the running client.
    pub messages: Vec<String>,
    /// Everything it printed.
    pub output: Vec<String>,
}

impl Ended {
    /// Fails the test unless the client exited with status 0.
    pub fn assert_success(&self) {
        assert!(
            self.status.success(),
            "client failed ({}):\n{}",
            self.status,
            self.output.join("\n")
        );
    }
}

/// Runs `program` with `-d` to completion (writing `stdin` to it if given),
/// failing the test if it takes longer than [`super::WAIT`].
pub async fn run(program: &str, args: &[String], stdin: Option<&str>) -> Output {
    let mut all = vec!["-d".to_owned()];
    all.extend_from_slice(args);
    let mut command = command(program, &all);
    if stdin.is_some() {
        command.stdin(Stdio::piped());
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run {program} (run `make deps`): {err}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(input.as_bytes()).await.expect("write stdin");
        // Dropping the pipe closes it: `-l` publishers exit at end of input.
    }
    within(program, child.wait_with_output())
        .await
        .expect("wait for client")
}

/// Runs `mosquitto_pub` against `addr` and fails the test unless it succeeds;
/// returns its debug output.
pub async fn publish(addr: SocketAddr, args: &[String], stdin: Option<&str>) -> String {
    let mut all = host_port(addr);
    all.extend_from_slice(args);
    let output = run("mosquitto_pub", &all, stdin).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "mosquitto_pub {all:?} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}
