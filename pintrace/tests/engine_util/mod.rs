//! Helpers of the integration tests of `pintrace engine` as a command: the
//! engine crate's own (temp dirs, loop devices, huge pages, a root check),
//! and running the `pintrace` binary.
#![allow(dead_code, unused_macros)]

// One copy of the helpers for both crates' tests; `need_root!` comes along.
#[macro_use]
#[path = "../../../pintrace-engine/tests/engine_util/mod.rs"]
mod shared;

pub use shared::*;
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_pintrace");

pub fn engine(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("engine")
        .args(args)
        .output()
        .expect("running pintrace")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
