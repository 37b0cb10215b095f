//! Running the commands a test bed is made of (`ip`, `nft`), and processes that die with their
//! owner.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::TestbedError;

/// How long one `ip`/`nft` command may take before the bed gives up on it.
const TOOL_TIMEOUT: Duration = Duration::from_secs(20);

/// Run `program args...` to completion, feeding `stdin`; its stdout on success.
pub(crate) fn tool(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, TestbedError> {
    let mut command = Command::new(program);
    command.args(args);
    let output = run_with_input(command, stdin, TOOL_TIMEOUT)?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(TestbedError::Command {
            command: describe(program, args),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// `ip args...`
pub(crate) fn ip(args: &[&str]) -> Result<String, TestbedError> {
    tool("ip", args, None)
}

/// Run `command` to completion within `timeout`, with `stdin` as its input; killed (with its
/// process group) when the time is up.
pub fn run_with_input(
    mut command: Command,
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<Output, TestbedError> {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut process = Process::spawn(command)?;
    if let (Some(text), Some(mut pipe)) = (stdin, process.child.stdin.take()) {
        // A program that exits without reading its input is reported by its status, not here.
        let _ = pipe.write_all(text.as_bytes());
    }
    let stdout = drain(process.child.stdout.take());
    let stderr = drain(process.child.stderr.take());
    let status = process.wait_timeout(timeout)?;
    let (stdout, stderr) = (join(stdout), join(stderr));
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => Err(TestbedError::Timeout {
            command: process.name.clone(),
            after: timeout,
        }),
    }
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> Option<thread::JoinHandle<Vec<u8>>> {
    pipe.map(|mut pipe| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    })
}

fn join(handle: Option<thread::JoinHandle<Vec<u8>>>) -> Vec<u8> {
    handle.and_then(|h| h.join().ok()).unwrap_or_default()
}

fn describe(program: &str, args: &[&str]) -> String {
    std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A child process in its own process group, killed with that whole group when dropped.
#[derive(Debug)]
pub struct Process {
    child: Child,
    name: String,
    exited: Option<ExitStatus>,
}

impl Process {
    /// Spawn `command` as the leader of a new process group.
    pub fn spawn(mut command: Command) -> Result<Process, TestbedError> {
        let name = format!("{command:?}");
        command.process_group(0);
        let child = command.spawn().map_err(|source| TestbedError::Spawn {
            command: name.clone(),
            source,
        })?;
        Ok(Process {
            child,
            name,
            exited: None,
        })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The underlying child, e.g. to take its pipes.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The exit status if it has exited, without waiting.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, TestbedError> {
        if self.exited.is_none() {
            self.exited = self
                .child
                .try_wait()
                .map_err(|source| TestbedError::Spawn {
                    command: self.name.clone(),
                    source,
                })?;
        }
        Ok(self.exited)
    }

    /// Wait up to `timeout` for it to exit; `None` if it is still running then.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, TestbedError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kill the process and everything in its process group, and reap it.
    pub fn kill(&mut self) {
        if self.exited.is_none() {
            kill_group(self.child.id());
            self.exited = self.child.wait().ok();
        } else {
            // The leader is gone; its group may still hold children it left behind.
            kill_group(self.child.id());
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// SIGKILL process group `pgid` (ignoring a group that is already gone).
pub(crate) fn kill_group(pgid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) with a negative pid signals a process group; it has no memory effects.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// SIGKILL one process.
pub(crate) fn kill_pid(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pid <= 1 {
        return;
    }
    // SAFETY: kill(2) only sends a signal; it has no memory effects.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}
