//! Child processes the environment starts: logs to files, stopped by PID on drop (also when a
//! test panics), and readiness waits with deadlines.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A started server. Dropping it kills it (SIGKILL) and reaps it.
pub struct Managed {
    name: String,
    child: Child,
    log: PathBuf,
    /// What started it, to start it again (`restart`).
    program: std::ffi::OsString,
    args: Vec<std::ffi::OsString>,
    envs: Vec<(std::ffi::OsString, Option<std::ffi::OsString>)>,
}

impl Managed {
    /// Starts `command`, its stdout and stderr going to `<log_dir>/<name>.log`.
    pub fn spawn(name: &str, mut command: Command, log_dir: &Path) -> anyhow::Result<Self> {
        let log = log_dir.join(format!("{name}.log"));
        let file = File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let child = launch(name, &mut command, file)?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
            program: command.get_program().to_owned(),
            args: command.get_args().map(ToOwned::to_owned).collect(),
            envs: command
                .get_envs()
                .map(|(k, v)| (k.to_owned(), v.map(ToOwned::to_owned)))
                .collect(),
        })
    }

    /// Kills the process (a crash, not a shutdown) and starts the same command again, its
    /// output appended to the same log.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        for (key, value) in &self.envs {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        let file = File::options().append(true).open(&self.log)?;
        self.child = launch(&self.name, &mut command, file)?;
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Fails with the end of the log when the process has already exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); last log lines:\n{}",
                self.name,
                self.log_tail(30)
            );
        }
        Ok(())
    }

    /// Everything the process wrote so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Stops the process now (SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits until `ready` answers true, failing early if the process dies.
    pub fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if ready() {
                return Ok(());
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "{}: {what} not ready after {timeout:?}; last log lines:\n{}",
                    self.name,
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the process (or a child of it) listens on `addr` and accepts connections.
    /// Whose listener answers is checked: tests run side by side, and a server that failed to
    /// bind must not pass for ready because another test's server answers on that port.
    pub fn wait_for_port(&mut self, addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
        let pid = self.pid();
        let mut foreign = false;
        let outcome = self.wait_until(&format!("port {addr}"), timeout, || {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
                return false;
            }
            let ours = listener_owned_by_tree(pid, addr.port());
            foreign = !ours;
            ours
        });
        outcome.with_context(|| {
            if foreign {
                format!("another process listens on {addr}")
            } else {
                format!("nothing of ours listens on {addr}")
            }
        })
    }
}

fn launch(name: &str, command: &mut Command, log: File) -> anyhow::Result<Child> {
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("start {name} ({:?})", command.get_program()))
}

impl Drop for Managed {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port free on every address at the time of asking: a wildcard bind conflicts with any
/// listener on that port, also one on the node's bridge address that a loopback bind would miss.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("0.0.0.0:0").context("bind 0.0.0.0:0")?;
    Ok(listener.local_addr()?.port())
}

/// True when a listening TCP socket on `port` is held by `pid` or one of its descendants.
fn listener_owned_by_tree(pid: u32, port: u16) -> bool {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return false;
    }
    process_tree(pid).into_iter().any(|p| {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{p}/fd")) else {
            return false;
        };
        fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| {
                let target = target.to_string_lossy();
                target
                    .strip_prefix("socket:[")
                    .and_then(|rest| rest.strip_suffix(']'))
                    .is_some_and(|inode| inodes.iter().any(|i| i == inode))
            })
        })
    })
}

/// Inodes of the sockets in LISTEN state (0A) on `port`, IPv4 and IPv6.
fn listening_inodes(port: u16) -> Vec<String> {
    let port = format!("{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let local_port = fields.get(1)?.rsplit(':').next()?;
                    (local_port == port && *fields.get(3)? == "0A")
                        .then(|| fields.get(9).map(|inode| (*inode).to_owned()))
                        .flatten()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `pid` and every process descended from it.
fn process_tree(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let child: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
            let parent = stat
                .rsplit(')')
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((child, parent))
        })
        .collect();
    let mut tree = vec![pid];
    let mut index = 0;
    while let Some(&current) = tree.get(index) {
        tree.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == current)
                .map(|(c, _)| *c),
        );
        index += 1;
    }
    tree
}

/// True when a process with this PID exists (used by tests that prove nothing is left behind).
pub fn pid_alive(pid: u32) -> bool {
    // A zombie still has /proc/<pid>; its state letter is Z.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

/// (current RSS, peak RSS) in KiB from /proc; zeros once the process is gone.
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time (user + system) the process and its waited-for children have used, in seconds;
/// 0 once it is gone.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime, cutime, cstime are fields 14..=17: 11..=14 counting the state (field 3) as 0.
    let ticks: u64 = (11..=14)
        .filter_map(|i| fields.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    // USER_HZ is 100 on Linux.
    ticks as f64 / 100.0
}

/// How a measured command ran.
pub struct Measured {
    pub status: std::process::ExitStatus,
    pub wall: Duration,
    /// Peak resident set size (VmHWM) in KiB, as last read before the process exited.
    pub peak_rss_kib: u64,
}

/// Runs `command` to completion, timing it exactly (a thread waits for it) while sampling its
/// peak resident memory from `/proc` every few milliseconds.
pub fn run_measured(command: &mut Command) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("start {:?}", command.get_program()))?;
    let status_file = format!("/proc/{}/status", child.id());
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        (status, started.elapsed())
    });
    let mut peak_rss_kib = 0;
    while !waiter.is_finished() {
        // VmHWM only grows: any reading after the peak shows it.
        if let Some(kib) = std::fs::read_to_string(&status_file).ok().and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        }) {
            peak_rss_kib = peak_rss_kib.max(kib);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let (status, wall) = waiter
        .join()
        .map_err(|_| anyhow::anyhow!("the waiting thread panicked"))?;
    Ok(Measured {
        status: status?,
        wall,
        peak_rss_kib,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("privateer-process-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_port_another_process_listens_on_is_not_taken_for_ready() {
        let dir = scratch("theirs");
        let theirs = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = theirs.local_addr().unwrap();
        let mut sleeper = Command::new("sleep");
        sleeper.arg("30");
        let mut ours = Managed::spawn("sleeper", sleeper, &dir).unwrap();
        let error = ours
            .wait_for_port(addr, Duration::from_millis(500))
            .unwrap_err();
        assert!(
            format!("{error:#}").contains("another process listens"),
            "{error:#}"
        );
        drop(ours);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_port_the_process_listens_on_is_ready() {
        let dir = scratch("ours");
        let port = free_port().unwrap();
        let mut server = Command::new("python3");
        server.args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ]);
        let mut ours = Managed::spawn("http", server, &dir).unwrap();
        ours.wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(20))
            .unwrap();
        drop(ours);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
