//! The dashboard's state and keys: [`App`], filled from the model; no terminal, no drawing.

use crate::{
    ledger::{Finding, Ledger},
    model::{
        stacks::{top_stacks, StackHolding, StackSort},
        Held, LifetimeSummary, Model, ProcessRow, Rate,
    },
};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::collections::HashMap;

/// What the header says.
#[derive(Clone, Debug, Default)]
pub struct Header {
    pub kernel: String,
    pub plan: String,
    /// "live" or "replay FILE (speed)".
    pub mode: String,
    pub uptime_s: f64,
    pub events: u64,
    /// Events the probes could not deliver, by cause (non-zero ones).
    pub lost: Vec<(String, u64)>,
    pub decode_errors: u64,
    /// A replay reached the end of its recording.
    pub ended: bool,
    /// Where a replayed recording is damaged.
    pub damage: Option<String>,
}

/// Everything drawn, copied from the model at each refresh.
#[derive(Clone, Debug, Default)]
pub struct Data {
    pub header: Header,
    pub rates: Vec<(f64, Rate)>,
    pub outstanding: Vec<(f64, [u64; 3])>,
    pub outstanding_now: [u64; 3],
    pub processes: Vec<ProcessRow>,
    /// Newest first.
    pub findings: Vec<Finding>,
    pub findings_total: u64,
    pub failures_total: u64,
    pub lifetime: LifetimeSummary,
    pub decades: Vec<(&'static str, u64)>,
    /// The charts' zero, in kernel ns (finding times are drawn relative to it).
    pub base_ns: u64,
    /// Every stack holding references, across all processes, most
    /// references first (the row without a stack last); frames come from
    /// [`App::stacks`].
    pub top_stacks: Vec<StackHolding>,
}

impl Data {
    pub fn collect(model: &Model, ledger: &Ledger, header: Header) -> Data {
        Data {
            header,
            rates: model.rates(),
            outstanding: model.outstanding_series(),
            outstanding_now: model.outstanding_now(),
            processes: model.processes(ledger),
            findings: model.findings().cloned().collect(),
            findings_total: model.findings_total,
            failures_total: model.failures_total,
            lifetime: model.lifetime_summary(),
            decades: model.lifetime_decades(),
            base_ns: model.base_ns,
            top_stacks: top_stacks(
                ledger.holders_by_folio(),
                model.now_ns,
                StackSort::Refs,
                usize::MAX,
            )
            .rows,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    Holders,
    Findings,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    Outstanding,
    Rate,
    Oldest,
    Total,
    Pid,
}

impl SortKey {
    fn next(self) -> SortKey {
        match self {
            SortKey::Outstanding => SortKey::Rate,
            SortKey::Rate => SortKey::Oldest,
            SortKey::Oldest => SortKey::Total,
            SortKey::Total => SortKey::Pid,
            SortKey::Pid => SortKey::Outstanding,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            SortKey::Outstanding => "outstanding",
            SortKey::Rate => "rate",
            SortKey::Oldest => "oldest",
            SortKey::Total => "total",
            SortKey::Pid => "pid",
        }
    }
}

/// One row of the holders table: a process, or one of its stacks.
#[derive(Clone, Debug, PartialEq)]
pub struct HolderRow {
    pub tgid: u32,
    pub comm: String,
    /// In the per-stack view.
    pub stack_id: Option<i32>,
    pub held: Held,
}

/// What the dashboard shows and where the user is in it. A plain struct:
/// [`App::new`] touches no kernel and no terminal.
#[derive(Clone, Debug)]
pub struct App {
    pub data: Data,
    /// Symbolized stacks by id (filled by the command as ids appear).
    pub stacks: HashMap<i32, Vec<String>>,
    pub focus: Focus,
    pub sort: SortKey,
    /// Case-insensitive filter on pid or command name.
    pub filter: String,
    /// Typing the filter (after `/`).
    pub editing_filter: bool,
    /// The per-stack view of this process (Enter), if open.
    pub expanded: Option<u32>,
    /// The holders pane shows the stacks of every process (`t`) instead of
    /// the processes.
    pub all_stacks: bool,
    pub holder_sel: usize,
    pub finding_sel: usize,
    pub quit: bool,
}

impl Default for App {
    fn default() -> Self {
        Self::new()
    }
}

impl App {
    pub fn new() -> App {
        App {
            data: Data::default(),
            stacks: HashMap::new(),
            focus: Focus::Holders,
            sort: SortKey::Outstanding,
            filter: String::new(),
            editing_filter: false,
            expanded: None,
            all_stacks: false,
            holder_sel: 0,
            finding_sel: 0,
            quit: false,
        }
    }

    /// New data from the model; selections stay in range.
    pub fn refresh(&mut self, data: Data) {
        self.data = data;
        self.clamp();
    }

    /// Stack ids drawn now that have no symbols yet.
    pub fn missing_stacks(&self) -> Vec<i32> {
        let mut ids: Vec<i32> = self
            .data
            .findings
            .iter()
            .map(|f| f.stack_id)
            .chain(
                self.data
                    .processes
                    .iter()
                    .flat_map(|p| p.stacks.iter().map(|s| s.stack_id)),
            )
            .chain(self.data.top_stacks.iter().filter_map(|s| s.stack_id))
            .filter(|id| *id >= 0 && !self.stacks.contains_key(id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn clamp(&mut self) {
        let n = match self.all_stacks {
            true => self.data.top_stacks.len(),
            false => self.holder_rows().len(),
        };
        self.holder_sel = self.holder_sel.min(n.saturating_sub(1));
        let n = self.data.findings.len();
        self.finding_sel = self.finding_sel.min(n.saturating_sub(1));
    }

    /// The rows of the stacks view (`t`): by the oldest holder when the
    /// sort is `oldest`, else by references held; the row without a stack
    /// stays last.
    pub fn stack_rows(&self) -> Vec<&StackHolding> {
        let mut rows: Vec<&StackHolding> = self.data.top_stacks.iter().collect();
        if self.sort == SortKey::Oldest {
            rows.sort_by(|a, b| {
                (a.stack_id.is_none(), b.oldest_age_ns, b.refs, a.stack_id).cmp(&(
                    b.stack_id.is_none(),
                    a.oldest_age_ns,
                    a.refs,
                    b.stack_id,
                ))
            });
        }
        rows
    }

    /// The stack selected in the stacks view, when it is shown and has one.
    pub fn selected_stack(&self) -> Option<&StackHolding> {
        self.all_stacks
            .then(|| self.stack_rows().get(self.holder_sel).copied())
            .flatten()
    }

    /// The rows of the holders table, filtered and sorted.
    pub fn holder_rows(&self) -> Vec<HolderRow> {
        let filter = self.filter.to_lowercase();
        let mut rows: Vec<HolderRow> = match self.expanded {
            Some(tgid) => self
                .data
                .processes
                .iter()
                .filter(|p| p.tgid == tgid)
                .flat_map(|p| {
                    p.stacks.iter().map(|s| HolderRow {
                        tgid: p.tgid,
                        comm: p.comm.to_string(),
                        stack_id: Some(s.stack_id),
                        held: s.held,
                    })
                })
                .collect(),
            None => self
                .data
                .processes
                .iter()
                .map(|p| HolderRow {
                    tgid: p.tgid,
                    comm: p.comm.to_string(),
                    stack_id: None,
                    held: p.held,
                })
                .filter(|r| {
                    filter.is_empty()
                        || r.comm.to_lowercase().contains(&filter)
                        || r.tgid.to_string().contains(&filter)
                })
                .collect(),
        };
        let key = self.sort;
        rows.sort_by(|a, b| {
            let (x, y) = (&a.held, &b.held);
            let ord = match key {
                SortKey::Outstanding => y
                    .outstanding_total()
                    .cmp(&x.outstanding_total())
                    .then(y.total_pages.cmp(&x.total_pages)),
                SortKey::Rate => y.rate.total_cmp(&x.rate),
                SortKey::Oldest => y.oldest_age_ns.cmp(&x.oldest_age_ns),
                SortKey::Total => y.total_pages.cmp(&x.total_pages),
                SortKey::Pid => a.tgid.cmp(&b.tgid),
            };
            ord.then(a.tgid.cmp(&b.tgid))
                .then(a.stack_id.cmp(&b.stack_id))
        });
        rows
    }

    pub fn handle_key(&mut self, key: KeyEvent) {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(key.code, KeyCode::Char('c')) {
            self.quit = true;
            return;
        }
        if self.editing_filter {
            match key.code {
                KeyCode::Enter => self.editing_filter = false,
                KeyCode::Esc => {
                    self.editing_filter = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => {}
            }
            self.holder_sel = 0;
            self.clamp();
            return;
        }
        let page = 10;
        match key.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Tab | KeyCode::BackTab => {
                self.focus = match self.focus {
                    Focus::Holders => Focus::Findings,
                    Focus::Findings => Focus::Holders,
                }
            }
            KeyCode::Char('t') => {
                self.all_stacks = !self.all_stacks;
                self.expanded = None;
                self.focus = Focus::Holders;
                self.holder_sel = 0;
            }
            KeyCode::Char('/') => {
                self.focus = Focus::Holders;
                self.expanded = None;
                self.all_stacks = false;
                self.editing_filter = true;
            }
            KeyCode::Char('s') => self.sort = self.sort.next(),
            KeyCode::Enter if self.focus == Focus::Holders && self.all_stacks => {}
            KeyCode::Enter if self.focus == Focus::Holders => match self.expanded {
                Some(_) => self.expanded = None,
                None => {
                    if let Some(r) = self.holder_rows().get(self.holder_sel) {
                        self.expanded = Some(r.tgid);
                        self.holder_sel = 0;
                    }
                }
            },
            KeyCode::Esc => {
                if self.all_stacks {
                    self.all_stacks = false;
                } else if self.expanded.take().is_none() {
                    self.filter.clear();
                }
                self.holder_sel = 0;
            }
            KeyCode::Down | KeyCode::Char('j') => self.move_by(1),
            KeyCode::Up | KeyCode::Char('k') => self.move_by(-1),
            KeyCode::PageDown => self.move_by(page),
            KeyCode::PageUp => self.move_by(-page),
            KeyCode::Home | KeyCode::Char('g') => self.move_by(isize::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => self.move_by(isize::MAX / 2),
            _ => {}
        }
        self.clamp();
    }

    fn move_by(&mut self, d: isize) {
        let sel = match self.focus {
            Focus::Holders => &mut self.holder_sel,
            Focus::Findings => &mut self.finding_sel,
        };
        *sel = sel.saturating_add_signed(d);
    }
}
