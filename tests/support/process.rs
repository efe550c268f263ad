//! A real `veil serve` process (the binary cargo built), for what only a
//! process shows: its stderr log, signals, several nodes.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::veil_bin;

/// `veil serve` on an ephemeral loopback port, its stderr kept in a file;
/// killed when dropped.
#[derive(Debug)]
pub struct ServeProcess {
    child: Child,
    /// `grpc://127.0.0.1:PORT`, from `--address-file`.
    pub address: String,
    log: PathBuf,
}

impl ServeProcess {
    /// `veil serve ARGS --listen 127.0.0.1:0`, with `RUST_LOG=rust_log`; the
    /// address file and the log (`NAME.log`) go in `dir`. Waits (at most
    /// 60 s) until it listens.
    pub fn start<I, A>(dir: &Path, name: &str, args: I, rust_log: &str) -> Self
    where
        I: IntoIterator<Item = A>,
        A: AsRef<OsStr>,
    {
        let address_file = dir.join(format!("{name}.address"));
        let _ = std::fs::remove_file(&address_file);
        let log = dir.join(format!("{name}.log"));
        let stderr = std::fs::File::create(&log).expect("log file");
        let mut child = Command::new(veil_bin())
            .arg("serve")
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--address-file"])
            .arg(&address_file)
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("veil starts");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(a) = std::fs::read_to_string(&address_file)
                && a.ends_with('\n')
            {
                return Self {
                    child,
                    address: a.trim().to_string(),
                    log,
                };
            }
            if let Some(status) = child.try_wait().expect("process status") {
                panic!(
                    "veil serve ({name}) exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "veil serve ({name}) did not start in 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Send a signal (`HUP`, `TERM`) with `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed");
    }

    /// What the process wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stop it the way a service manager does (SIGTERM: in-flight reads
    /// finish, their log lines are written) and return its whole log.
    pub fn stop(mut self) -> String {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait().expect("process status").is_none() {
            assert!(
                Instant::now() < deadline,
                "veil serve did not stop in 60 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.log()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
