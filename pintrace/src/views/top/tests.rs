//! The dashboard at fixed sizes on synthetic streams, and its keys.

use super::{caller, App, Data, Focus, Header, SortKey};
use crate::{
    ledger::{Ledger, LedgerConfig},
    stream::pipeline::Pipeline,
    synth::{demo, folio, Stream, MS},
};
use ratatui::{
    backend::TestBackend,
    crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers},
    style::Color,
    Terminal,
};

const T0: u64 = 5_000 * MS;

fn header() -> Header {
    Header {
        kernel: "6.12.0-test".into(),
        plan: "pin_user_pages_fast=fexit get_user_pages_fast=fexit gup_put_folio=fentry".into(),
        mode: "replay demo.ptrec (max speed)".into(),
        ..Header::default()
    }
}

/// The app after feeding `s` and ticking at its end.
fn app_of(s: &Stream) -> App {
    let mut p = Pipeline::new(Ledger::new(s.flags, LedgerConfig::default()));
    p.model.start(T0);
    let mut found = Vec::new();
    for (_, r) in &s.records {
        p.feed(r, &mut found);
    }
    p.tick(s.ts, &mut found);
    let mut h = header();
    h.uptime_s = p.model.uptime_s();
    h.events = p.ledger.tally.events;
    let mut app = App::new();
    app.stacks.insert(
        13,
        vec![
            "pin_user_pages_fast+0x0/0x60".into(),
            "leaky_ioctl+0x2a/0x90".into(),
        ],
    );
    app.stacks.insert(
        11,
        vec![
            "pin_user_pages_fast+0x0/0x60".into(),
            "iov_iter_extract_pages+0x1c/0x80".into(),
            "blkdev_direct_IO+0x3f/0x120".into(),
        ],
    );
    app.refresh(Data::collect(&p.model, &p.ledger, h));
    app
}

fn screen(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| f.render_widget(app, f.area())).unwrap();
    let buf = t.backend().buffer();
    (0..h)
        .map(|y| {
            (0..w)
                .map(|x| buf[(x, y)].symbol())
                .collect::<String>()
                .trim_end()
                .to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent {
        code,
        modifiers: KeyModifiers::NONE,
        kind: KeyEventKind::Press,
        state: ratatui::crossterm::event::KeyEventState::NONE,
    }
}

#[test]
fn empty_data_at_both_sizes() {
    let mut app = App::new();
    app.refresh(Data {
        header: header(),
        ..Data::default()
    });
    for (w, h) in [(80, 24), (160, 48)] {
        let s = screen(&app, w, h);
        assert!(s.contains("pintrace top"), "{s}");
        assert!(
            s.contains("no findings") && s.contains("no pin released yet"),
            "{s}"
        );
        assert!(s.contains("lost 0") && s.contains("q quit"), "{s}");
        insta::assert_snapshot!(format!("empty_{w}x{h}"), s);
    }
}

#[test]
fn a_demo_run_at_both_sizes() {
    let app = app_of(&demo(T0, 3));
    let s = screen(&app, 80, 24);
    // The busiest holder first; the leaky process holds 2 pins.
    assert!(s.contains("leaky"), "{s}");
    assert!(s.contains("vfio-user") && s.contains(" dd "), "{s}");
    assert!(s.contains("MISMATCH") && !s.contains("LEAK"), "{s}");
    assert!(s.contains("<10ms"), "{s}");
    insta::assert_snapshot!("demo_80x24", s);
    let s = screen(&app, 160, 48);
    assert!(s.contains("TOTAL") && s.contains("7680"), "{s}");
    assert!(s.contains("refcount underflow"), "{s}");
    insta::assert_snapshot!("demo_160x48", s);
}

#[test]
fn a_burst_of_findings_newest_first_with_the_selected_stack() {
    let mut s = Stream::new(T0);
    s.wait(MS).pin(150, "leaky", 13, &[folio(1)]);
    for i in 0..200 {
        s.wait(MS).unpin(folio(1000 + i), 1, 1);
    }
    let mut app = app_of(&s);
    let screen80 = screen(&app, 80, 24);
    assert!(
        screen80.contains("findings 200 (200 failing)"),
        "{screen80}"
    );
    // Newest first: the last folio unpinned is on top.
    let newest = format!("{:#x}", folio(1199));
    assert!(
        screen80.contains(&newest[..14]) || screen(&app, 160, 48).contains(&newest),
        "{screen80}"
    );
    insta::assert_snapshot!("burst_80x24", screen80);
    app.handle_key(key(KeyCode::Tab));
    app.handle_key(key(KeyCode::End));
    assert_eq!(app.finding_sel, 199);
    let big = screen(&app, 160, 48);
    assert!(big.contains(&format!("{:#x}", folio(1000))), "{big}");
    insta::assert_snapshot!("burst_160x48_last", big);
}

#[test]
fn keys_move_sort_filter_expand_and_quit() {
    let mut app = app_of(&demo(T0, 3));
    let pids = |app: &App| app.holder_rows().iter().map(|r| r.tgid).collect::<Vec<_>>();
    assert_eq!(pids(&app), vec![151, 150, 149], "by outstanding");
    app.handle_key(key(KeyCode::Char('s')));
    assert_eq!(app.sort, SortKey::Rate);
    assert_eq!(pids(&app)[0], 149, "dd pins fastest");
    app.handle_key(key(KeyCode::Char('s')));
    app.handle_key(key(KeyCode::Char('s')));
    assert_eq!(app.sort, SortKey::Total);
    app.handle_key(key(KeyCode::Char('s')));
    assert_eq!(pids(&app), vec![149, 150, 151], "by pid");
    // Move, clamped to the rows.
    app.handle_key(key(KeyCode::Down));
    app.handle_key(key(KeyCode::Char('j')));
    app.handle_key(key(KeyCode::Down));
    assert_eq!(app.holder_sel, 2);
    app.handle_key(key(KeyCode::Up));
    assert_eq!(app.holder_sel, 1);
    // Filter: typed after `/`, kept with Enter, cleared with Esc.
    app.handle_key(key(KeyCode::Char('/')));
    for c in "LEA".chars() {
        app.handle_key(key(KeyCode::Char(c)));
    }
    assert!(app.editing_filter);
    app.handle_key(key(KeyCode::Char('q')));
    assert!(!app.quit, "q is typed into the filter");
    app.handle_key(key(KeyCode::Backspace));
    app.handle_key(key(KeyCode::Enter));
    assert_eq!((app.filter.as_str(), pids(&app)), ("LEA", vec![150]));
    assert!(screen(&app, 80, 24).contains("filter /LEA"));
    app.handle_key(key(KeyCode::Esc));
    assert_eq!(pids(&app).len(), 3);
    app.handle_key(key(KeyCode::Char('/')));
    app.handle_key(key(KeyCode::Char('1')));
    app.handle_key(key(KeyCode::Char('4')));
    app.handle_key(key(KeyCode::Char('9')));
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(pids(&app), vec![149]);
    // Enter: the selected process by stack; Enter or Esc goes back.
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(app.expanded, Some(149));
    let rows = app.holder_rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].stack_id, Some(11));
    let s = screen(&app, 160, 48);
    assert!(
        s.contains("holders of 149 (dd) by stack")
            && s.contains("CALLER")
            && s.contains("blkdev_direct_IO "),
        "{s}"
    );
    app.handle_key(key(KeyCode::Esc));
    assert_eq!(app.expanded, None);
    // Tab moves to the findings; q and Ctrl-C quit.
    app.handle_key(key(KeyCode::Tab));
    assert_eq!(app.focus, Focus::Findings);
    app.handle_key(key(KeyCode::Char('q')));
    assert!(app.quit);
    let mut app = App::new();
    app.handle_key(KeyEvent {
        modifiers: KeyModifiers::CONTROL,
        ..key(KeyCode::Char('c'))
    });
    assert!(app.quit);
}

#[test]
fn lost_events_are_red_in_the_header() {
    let mut app = App::new();
    let mut h = header();
    h.lost = vec![("ringbuf_full".into(), 12)];
    app.refresh(Data {
        header: h,
        ..Data::default()
    });
    let mut t = Terminal::new(TestBackend::new(80, 24)).unwrap();
    t.draw(|f| f.render_widget(&app, f.area())).unwrap();
    let buf = t.backend().buffer();
    let line: String = (0..80).map(|x| buf[(x, 0)].symbol()).collect();
    let at = line.find("LOST").expect("LOST in the header") as u16;
    // Columns count chars, not bytes: the header has box-drawing separators.
    let col = line[..at as usize].chars().count() as u16;
    assert_eq!(buf[(col, 0)].bg, Color::Red, "{line}");
    assert!(line.contains("ringbuf_full=12"), "{line}");
}

#[test]
fn the_caller_is_the_first_frame_outside_gup() {
    let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        caller(&f(&[
            "pin_user_pages_fast+0x0/0x60",
            "__iov_iter_get_pages_alloc+0x1",
            "bio_iov_iter_get_pages+0x2",
            "iomap_dio_bio_iter+0x3"
        ])),
        "iomap_dio_bio_iter"
    );
    assert_eq!(caller(&f(&["gup_put_folio+0x0"])), "gup_put_folio");
    assert_eq!(caller(&[]), "?");
}

#[test]
fn an_expanded_process_names_its_sampled_out_stacks() {
    let mut s = Stream::new(T0);
    s.wait(MS).pin(150, "engine", 11, &[folio(1)]);
    s.wait(MS).pin(
        150,
        "engine",
        pintrace_common::STACK_NOT_TAKEN,
        &[folio(2), folio(3)],
    );
    let mut app = app_of(&s);
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(app.expanded, Some(150));
    let big = screen(&app, 160, 48);
    assert!(
        big.contains("(stack sampled out)") && big.contains("blkdev_direct_IO"),
        "{big}"
    );
    assert!(!big.contains("-2147483648"), "{big}");
}

/// `t`: the stacks of every process, most references first, the row
/// without a stack last; the selected stack's frames beside the findings.
#[test]
fn the_stacks_view_tables_every_process_with_frames() {
    let mut s = demo(T0, 3);
    s.wait(MS).pin(
        152,
        "engine",
        pintrace_common::STACK_NOT_TAKEN,
        &[folio(5_000_000)],
    );
    let mut app = app_of(&s);
    app.handle_key(key(KeyCode::Char('t')));
    assert!(app.all_stacks);
    let ids = |app: &App| {
        app.stack_rows()
            .iter()
            .map(|r| r.stack_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&app), [Some(12), Some(13), None]);
    assert!(
        app.missing_stacks().contains(&12),
        "the view asks for its stacks"
    );
    let refs: u64 = app.stack_rows().iter().map(|r| r.refs).sum();
    assert_eq!(refs, app.data.outstanding_now.iter().sum::<u64>());
    // The leak's stack, selected: its frames beside the findings.
    app.handle_key(key(KeyCode::Down));
    assert_eq!(app.selected_stack().and_then(|r| r.stack_id), Some(13));
    let small = screen(&app, 80, 24);
    assert!(
        small.contains("all stacks: 10 ref(s) held, sort refs")
            && small.contains("leaky_ioctl")
            && small.contains("stack 13: 2 reference(s)")
            && small.contains("(no stack)"),
        "{small}"
    );
    insta::assert_snapshot!("stacks_80x24", small);
    let big = screen(&app, 160, 48);
    assert!(
        big.contains("PROCESSES") && big.contains("leaky/150") && big.contains("vfio-user/151"),
        "{big}"
    );
    assert!(
        big.contains("pin_user_pages_fast+0x0/0x60") && big.contains("leaky_ioctl+0x2a/0x90"),
        "{big}"
    );
    insta::assert_snapshot!("stacks_160x48", big);
    // Sorted by the oldest holder: the FOLL_GET references of the start.
    app.handle_key(key(KeyCode::Char('s')));
    app.handle_key(key(KeyCode::Char('s')));
    assert_eq!(app.sort, SortKey::Oldest);
    assert_eq!(ids(&app), [Some(12), Some(13), None]);
    assert!(screen(&app, 80, 24).contains("sort oldest"));
    // The findings pane keeps its own stack when it has the focus.
    app.handle_key(key(KeyCode::Tab));
    assert!(screen(&app, 160, 48).contains("stack of the selected finding"));
    // t or Esc goes back to the processes.
    app.handle_key(key(KeyCode::Tab));
    app.handle_key(key(KeyCode::Esc));
    assert!(!app.all_stacks);
    app.handle_key(key(KeyCode::Char('t')));
    app.handle_key(key(KeyCode::Char('t')));
    assert!(!app.all_stacks);
    // Nothing held: said so.
    let mut empty = App::new();
    empty.handle_key(key(KeyCode::Char('t')));
    assert!(screen(&empty, 80, 24).contains("no references held"));
}
