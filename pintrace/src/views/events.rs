//! `run --events`: every decoded event as one JSON object per line, with a
//! `type` field, and the process filter `--pid` / `--comm` share.

use crate::stream::events::{Comm, Event};
use rustc_hash::FxHashSet;
use serde_json::{json, Value};

/// The event as a JSON object (`type`: acquire, folios, release, bio, exit,
/// rq_complete).
pub fn to_json(e: &Event) -> Value {
    match e {
        Event::Acquire(a) => json!({
            "type": "acquire",
            "ts_ns": a.ts_ns,
            "site": a.site.symbol(),
            "tgid": a.tgid,
            "tid": a.tid,
            "comm": a.comm,
            "start": format!("{:#x}", a.start),
            "nr_pages": a.nr_pages,
            "gup_flags": format!("{:#x}", a.gup_flags),
            "ret": a.ret,
            "stack_id": a.stack_id,
        }),
        Event::Folios(f) => json!({
            "type": "folios",
            "ts_ns": f.ts_ns,
            "tgid": f.tgid,
            "tid": f.tid,
            "first": f.first,
            "folios": f.iter().map(|x| format!("{x:#x}")).collect::<Vec<_>>(),
        }),
        Event::Release(r) => json!({
            "type": "release",
            "ts_ns": r.ts_ns,
            "site": r.site.symbol(),
            "tgid": r.tgid,
            "tid": r.tid,
            "comm": r.comm,
            "folio": format!("{:#x}", r.folio),
            "refs": r.refs,
            "gup_flags": format!("{:#x}", r.gup_flags),
            "refcount": r.refcount,
            "large": r.large,
            "stack_id": r.stack_id,
        }),
        Event::Bio(b) => json!({
            "type": "bio",
            "phase": format!("{:?}", b.phase).to_lowercase(),
            "ts_ns": b.ts_ns,
            "tgid": b.tgid,
            "tid": b.tid,
            "bio": format!("{:#x}", b.bio),
            "dev": format!("{}:{}", b.major, b.minor),
            "sector": b.sector,
            "bytes": b.bytes,
            "write": b.is_write(),
            "flags": format!("{:#x}", b.flags),
            "status": b.status,
        }),
        Event::Exit { tgid, ts_ns } => json!({"type": "exit", "ts_ns": ts_ns, "tgid": tgid}),
        Event::RqComplete(r) => {
            let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                m.insert("type".into(), "rq_complete".into());
            }
            v
        }
        Event::Booked(b) => json!({
            "type": "booked",
            "ts_ns": b.ts_ns,
            "folio": format!("{:#x}", b.folio),
            "refs": b.refs,
            "acquired_ns": b.acquired_ns,
            "tgid": b.tgid,
            "comm": b.comm,
            "site": b.site.symbol(),
            "longterm": b.longterm,
            "stack_id": b.stack_id,
        }),
        Event::Counted(c) => json!({
            "type": "counted",
            "ts_ns": c.ts_ns,
            "tgid": c.tgid,
            "comm": c.comm,
            "site": c.site.map(|s| s.symbol()),
            "longterm": c.longterm,
            "stack_id": c.stack_id,
            "calls": c.calls,
            "pages": c.pages,
            "failed": c.failed,
            "released": c.released,
        }),
    }
}

/// `--pid` / `--comm`: which processes a run reports on. The books always
/// cover every process (a release runs in whatever context completes the
/// I/O); the filter only chooses what is shown.
#[derive(Clone, Debug, Default)]
pub struct ProcessFilter {
    pids: Vec<u32>,
    comms: Vec<String>,
    /// Processes seen matching by name, for events that carry only a tgid.
    named: FxHashSet<u32>,
}

impl ProcessFilter {
    pub fn new(pids: &[u32], comms: &[String]) -> ProcessFilter {
        ProcessFilter {
            pids: pids.to_vec(),
            comms: comms.to_vec(),
            named: FxHashSet::default(),
        }
    }

    pub fn is_active(&self) -> bool {
        !self.pids.is_empty() || !self.comms.is_empty()
    }

    /// Whether a process is shown; `comm` when the record carries one.
    pub fn matches(&mut self, tgid: u32, comm: Option<&Comm>) -> bool {
        if !self.is_active() || self.pids.contains(&tgid) || self.named.contains(&tgid) {
            return true;
        }
        let named = comm.is_some_and(|c| self.comms.iter().any(|n| *n == c.as_str()));
        if named {
            self.named.insert(tgid);
        }
        named
    }

    /// Whether an event is shown. Completions (bio end, block requests)
    /// run in whoever's context the interrupt found: shown unfiltered only.
    pub fn shows(&mut self, e: &Event) -> bool {
        match e {
            Event::Acquire(a) => self.matches(a.tgid, Some(&a.comm)),
            Event::Release(r) => self.matches(r.tgid, Some(&r.comm)),
            Event::Folios(f) => self.matches(f.tgid, None),
            Event::Exit { tgid, .. } => self.matches(*tgid, None),
            Event::Bio(b) => {
                !self.is_active()
                    || (matches!(
                        b.phase,
                        crate::stream::events::BioPhase::FillBegin
                            | crate::stream::events::BioPhase::FillEnd
                    ) && self.matches(b.tgid, None))
            }
            Event::RqComplete(_) => !self.is_active(),
            Event::Booked(b) => self.matches(b.tgid, Some(&b.comm)),
            Event::Counted(c) => self.matches(c.tgid, Some(&c.comm)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::events::{Acquire, Release};
    use pintrace_common::Site;

    fn comm(s: &str) -> Comm {
        let mut c = [0u8; 16];
        c[..s.len()].copy_from_slice(s.as_bytes());
        Comm(c)
    }

    fn acquire(tgid: u32, name: &str) -> Event {
        Event::Acquire(Acquire {
            site: Site::PinUserPagesFast,
            ts_ns: 1,
            tgid,
            tid: tgid,
            start: 0x1000,
            pages_array: 0,
            ret: 1,
            nr_pages: 1,
            gup_flags: 1 << 19,
            stack_id: 1,
            folio_records: 1,
            comm: comm(name),
            counted: false,
        })
    }

    #[test]
    fn events_carry_their_type() {
        let v = to_json(&acquire(5, "dd"));
        assert_eq!(v["type"], "acquire");
        assert_eq!(v["site"], "pin_user_pages_fast");
        assert_eq!(v["comm"], "dd");
        let v = to_json(&Event::Exit { tgid: 5, ts_ns: 9 });
        assert_eq!(
            (v["type"].as_str(), v["tgid"].as_u64()),
            (Some("exit"), Some(5))
        );
    }

    #[test]
    fn filter_by_pid_and_by_name_follows_the_process() {
        let mut f = ProcessFilter::new(&[], &["dd".into()]);
        assert!(f.shows(&acquire(5, "dd")));
        assert!(!f.shows(&acquire(6, "fio")));
        // Only a tgid: known by name from before.
        assert!(f.shows(&Event::Exit { tgid: 5, ts_ns: 1 }));
        assert!(!f.shows(&Event::Exit { tgid: 6, ts_ns: 1 }));
        let mut f = ProcessFilter::new(&[6], &[]);
        assert!(f.shows(&acquire(6, "fio")));
        assert!(!f.shows(&Event::Release(Release {
            site: Site::GupPutFolio,
            ts_ns: 1,
            tgid: 0,
            tid: 0,
            folio: 1,
            refs: 1,
            gup_flags: 0,
            refcount: 0,
            stack_id: 0,
            large: false,
            comm: comm("swapper/0"),
            books: Default::default(),
        })));
        assert!(ProcessFilter::default().shows(&acquire(1, "x")));
    }
}
