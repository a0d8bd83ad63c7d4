//! Findings as they happen: a line (and the stack) for a person, one JSON
//! object per finding for a program.

use crate::ledger::{Finding, FindingKind};
use serde::Serialize;
use std::fmt::Write as _;

/// A finding with its kernel stack resolved.
#[derive(Clone, Debug, Serialize)]
pub struct Report<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub certain: bool,
    #[serde(flatten)]
    pub finding: &'a Finding,
    pub stack: &'a [String],
}

pub fn label(kind: FindingKind) -> &'static str {
    match kind {
        FindingKind::LeakAtEnd => "LEAK",
        FindingKind::LongtermHeldAtEnd => "HELD (long-term)",
        FindingKind::LeakOld => "LEAK (old)",
        FindingKind::LeakOwnerExited => "LEAK (owner exited)",
        FindingKind::UnpinOfGetPage => "MISMATCH (unpin of FOLL_GET page)",
        FindingKind::DoubleUnpin => "MISMATCH (double unpin)",
        FindingKind::UnpinWithoutPin => "MISMATCH (unpin without pin)",
        FindingKind::PinReleasedAsGet => "MISMATCH (pin released with put_page)",
        FindingKind::LeakAfterBio => "LEAK (after its bio completed)",
    }
}

pub fn render(r: &Report<'_>) -> String {
    let f = r.finding;
    let mut s = format!(
        "{}: folio {:#x} pid {} ({}) {}{}\n",
        label(f.kind),
        f.folio,
        f.tgid,
        f.comm,
        f.detail,
        if r.certain {
            ""
        } else {
            " [events were lost: may be incomplete]"
        }
    );
    if let Some(bio) = &f.bio {
        let _ = writeln!(s, "  bio: {bio}");
    }
    if let Some(h) = f.holder.filter(|_| f.kind.is_mismatch()) {
        let _ = writeln!(
            s,
            "  held by pid {} ({}) as {} ({} ref(s))",
            h.tgid,
            h.comm,
            h.kind.label(),
            h.refs
        );
    }
    for frame in r.stack {
        let _ = writeln!(s, "    {frame}");
    }
    if r.stack.is_empty() {
        if let Some(why) = super::missing_stack(f.stack_id) {
            let _ = writeln!(s, "    ({why})");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ledger::Finding, stream::events::Comm};

    #[test]
    fn renders_kind_folio_owner_and_stack() {
        let f = Finding {
            kind: FindingKind::LeakAtEnd,
            folio: 0xffffea0000001000,
            refs: 1,
            tgid: 42,
            comm: Comm(*b"engine\0\0\0\0\0\0\0\0\0\0"),
            stack_id: 3,
            holder: None,
            bio: None,
            at_ns: 0,
            detail: "FOLL_PIN 1 ref(s) not released".into(),
        };
        let stack = vec!["pin_user_pages_fast+0x0".to_owned()];
        let r = Report {
            kind: "finding",
            certain: false,
            finding: &f,
            stack: &stack,
        };
        let text = render(&r);
        assert!(
            text.starts_with("LEAK: folio 0xffffea0000001000 pid 42 (engine)"),
            "{text}"
        );
        assert!(text.contains("may be incomplete") && text.contains("    pin_user_pages_fast+0x0"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["type"], "finding");
        assert_eq!(json["kind"], "leak_at_end");
        assert_eq!(json["stack"][0], "pin_user_pages_fast+0x0");
    }

    #[test]
    fn a_finding_without_a_stack_says_why() {
        let mut f = Finding {
            kind: FindingKind::DoubleUnpin,
            folio: 0x1000,
            refs: 1,
            tgid: 7,
            comm: Comm(*b"zoo\0\0\0\0\0\0\0\0\0\0\0\0\0"),
            stack_id: pintrace_common::STACK_NOT_TAKEN,
            holder: None,
            bio: None,
            at_ns: 0,
            detail: String::new(),
        };
        let report = |f: &Finding| {
            render(&Report {
                kind: "finding",
                certain: true,
                finding: f,
                stack: &[],
            })
        };
        assert!(
            report(&f).contains("(no stack: sampled out"),
            "{}",
            report(&f)
        );
        f.stack_id = -17;
        assert!(report(&f).contains("stack map full"), "{}", report(&f));
        f.stack_id = 5;
        assert!(!report(&f).contains("no stack"), "{}", report(&f));
    }
}
