//! Running real `seckill` processes from tests.

#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_seckill"))
}

/// A `seckill engine` child; killed (-9) when dropped.
pub struct EngineProc {
    pub child: Child,
    pub data_dir: PathBuf,
}

impl EngineProc {
    pub fn start(data_dir: &Path, extra: &[&str]) -> EngineProc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.with_extension("log"))
            .expect("engine log file");
        let child = Command::new(bin())
            .arg("engine")
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning seckill engine");
        let mut p = EngineProc { child, data_dir: data_dir.to_path_buf() };
        p.wait_ready();
        p
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("seckill engine exited during start-up: {status}; see {}", self.data_dir.with_extension("log").display());
            }
            if UnixStream::connect(self.data_dir.join("admin.sock")).is_ok()
                && UnixStream::connect(self.data_dir.join("engine.sock")).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("seckill engine did not come up within 30 s");
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    pub fn admin(&self, cmd: &str, args: Value) -> Result<Value, Value> {
        admin(&self.data_dir, cmd, args)
    }
}

impl Drop for EngineProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn admin(data_dir: &Path, cmd: &str, args: Value) -> Result<Value, Value> {
    let stream = UnixStream::connect(data_dir.join("admin.sock")).expect("admin socket");
    let mut w = stream.try_clone().expect("clone");
    writeln!(w, "{}", serde_json::json!({"cmd": cmd, "args": args})).expect("write admin line");
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).expect("read admin reply");
    let v: Value = serde_json::from_str(&line).expect("admin reply is JSON");
    if v["ok"] == Value::Bool(true) {
        Ok(v["result"].clone())
    } else {
        Err(v["error"].clone())
    }
}
