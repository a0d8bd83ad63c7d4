//! `pintrace doctor`.

use super::{exit, startup};
use crate::{
    plan::Preference,
    probes::LoadOptions,
    views::doctor::{render, DoctorReport},
};
use anyhow::Result;

pub fn run(json: bool) -> Result<u8> {
    let opts = LoadOptions {
        ringbuf_bytes: 1 << 16,
        rq_layout: None,
        struct_offsets: Default::default(),
        verbose: false,
        wakeup_bytes: 0,
        stack_interval_ns: 0,
        foll_pin: 0,
        rq_records: 0,
    };
    let s = startup(Preference::Auto, &opts)?;
    let can_trace = s.plan.is_ok();
    let report = DoctorReport {
        kind: "doctor",
        caps: s.caps,
        plan: s.plan.map_err(|e| e.0),
        actions: s.actions,
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(if can_trace { exit::OK } else { exit::FINDINGS })
}
