//! Running an external program once: its input on stdin (never in its arguments or
//! environment), its exit code and output back, within a time limit past which it is
//! killed with its whole process group (a shell script's children too), at most so many
//! at once.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

/// The most of a program's stdout that is read: its answer is a small JSON object.
const STDOUT_MAX: usize = 64 * 1024;
/// The most of its stderr kept for the log.
const STDERR_MAX: usize = 4 * 1024;

/// A configured program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub command: PathBuf,
    pub args: Vec<String>,
    /// One call, waiting for a turn included; past it the program is killed.
    pub timeout: Duration,
    /// Calls running at once; more wait for a turn (within `timeout`).
    pub concurrency: usize,
    /// How long an answer is remembered; zero: never.
    pub cache_ttl: Duration,
}

/// How one call ended.
#[derive(Debug)]
pub struct Exit {
    /// `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start {command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer within {0:?}; killed")]
    Timeout(Duration),
    #[error("it wrote more than {STDOUT_MAX} bytes")]
    TooMuchOutput,
    #[error("waiting for it: {0}")]
    Wait(#[source] std::io::Error),
}

/// A program and the bound on its calls.
pub struct Runner {
    program: Program,
    turns: Semaphore,
}

impl Runner {
    pub fn new(program: Program) -> Runner {
        Runner {
            turns: Semaphore::new(program.concurrency.max(1)),
            program,
        }
    }

    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Runs the program with `input` on stdin.
    pub async fn run(&self, input: &[u8]) -> Result<Exit, RunError> {
        let timeout = self.program.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let _turn = tokio::time::timeout_at(deadline, self.turns.acquire())
            .await
            .map_err(|_| RunError::Timeout(timeout))?;
        let mut child = tokio::process::Command::new(&self.program.command)
            .args(&self.program.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so the kill below reaches what it started.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| RunError::Spawn {
                command: self.program.command.display().to_string(),
                source,
            })?;
        let pid = child.id();
        let outcome = tokio::time::timeout_at(deadline, talk(&mut child, input)).await;
        let failed = match outcome {
            Ok(Ok(exit)) => return Ok(exit),
            Ok(Err(e)) => e,
            Err(_) => RunError::Timeout(timeout),
        };
        kill(pid, &mut child);
        // The turn is given back once the program is gone (and reaped), not when the
        // signal is sent: until then it still runs, and the next call would make one more
        // than `concurrency`.
        let _ = tokio::time::timeout(REAP_WAIT, child.wait()).await;
        Err(failed)
    }
}

/// How long a killed program is waited for before its turn is given back regardless.
const REAP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Writes the input, reads both outputs (bounded) and waits for the exit.
async fn talk(child: &mut tokio::process::Child, input: &[u8]) -> Result<Exit, RunError> {
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let write = async move {
        if let Some(mut stdin) = stdin {
            // A program that exits without reading its input is its business (EPIPE).
            let _ = stdin.write_all(input).await;
            let _ = stdin.shutdown().await;
        }
    };
    let (_, out, err) = tokio::join!(
        write,
        read_capped(stdout, STDOUT_MAX),
        read_capped(stderr, STDERR_MAX)
    );
    let (stdout, overflow) = out;
    if overflow {
        return Err(RunError::TooMuchOutput);
    }
    let status = child.wait().await.map_err(RunError::Wait)?;
    Ok(Exit {
        code: status.code(),
        stdout,
        stderr: err.0,
    })
}

/// Up to `max` bytes, and whether there was more (reading stops there).
async fn read_capped(pipe: Option<impl AsyncRead + Unpin>, max: usize) -> (Vec<u8>, bool) {
    let Some(mut pipe) = pipe else {
        return (Vec::new(), false);
    };
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return (out, false),
            Ok(n) if out.len() + n > max => {
                out.extend_from_slice(&buf[..max - out.len()]);
                return (out, true);
            }
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Kills the program's process group, then the program itself (tokio reaps it).
fn kill(pid: Option<u32>, child: &mut tokio::process::Child) {
    if let Some(pid) = pid
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.start_kill();
}

/// Text for the log: lossy UTF-8, one line, `secret` (when not empty) replaced.
pub fn for_log(bytes: &[u8], secret: Option<&str>) -> String {
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    if let Some(secret) = secret.filter(|s| !s.is_empty()) {
        text = text.replace(secret, "<redacted>");
    }
    let text = text.trim().replace(['\n', '\r'], " | ");
    match text.char_indices().nth(500) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text,
    }
}
