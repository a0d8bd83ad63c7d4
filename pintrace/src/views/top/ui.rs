//! The dashboard's drawing: `impl Widget for &App`, from the state alone; no I/O, no lock.

use super::app::{App, Focus};
use crate::{model::Rate, views::findings::label};
use ratatui::{
    buffer::Buffer,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style, Stylize},
    symbols::Marker,
    text::{Line, Span},
    widgets::{
        Axis, Block, Borders, Cell, Chart, Dataset, GraphType, List, ListItem, ListState,
        Paragraph, Row, StatefulWidget, Table, TableState, Widget,
    },
};

/// GUP's own frames and the iov_iter helpers above it: skipped to name who
/// asked for the pages.
const GUP_FRAMES: [&str; 10] = [
    "pin_user_pages",
    "get_user_pages",
    "gup_",
    "__gup",
    "internal_get_user_pages",
    "try_grab",
    "iov_iter_",
    "__iov_iter",
    "bio_iov_iter",
    "__bio_iov_iter",
];

/// The first frame of a stack outside GUP (the caller that pinned), without
/// its offset; the first frame when all are GUP's.
pub fn caller(frames: &[String]) -> &str {
    let name = |f: &String| f.split('+').next().unwrap_or(f).len();
    let pick = frames
        .iter()
        .find(|f| !GUP_FRAMES.iter().any(|g| f.starts_with(g)))
        .or(frames.first());
    match pick {
        Some(f) => &f[..name(f)],
        None => "?",
    }
}

fn age(ns: Option<u64>) -> String {
    match ns {
        None => "-".into(),
        Some(ns) if ns < 1_000_000 => format!("{}us", ns / 1000),
        Some(ns) if ns < 1_000_000_000 => format!("{}ms", ns / 1_000_000),
        Some(ns) if ns < 600_000_000_000 => format!("{:.1}s", ns as f64 / 1e9),
        Some(ns) => format!("{}m", ns / 60_000_000_000),
    }
}

fn count(v: u64) -> String {
    match v {
        0..=99_999 => v.to_string(),
        100_000..=99_999_999 => format!("{}k", v / 1000),
        _ => format!("{}M", v / 1_000_000),
    }
}

fn rate(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v < 10.0 {
        format!("{v:.1}")
    } else {
        count(v.round() as u64)
    }
}

const PIN: Color = Color::Cyan;
const GET: Color = Color::Yellow;
const UNPIN: Color = Color::Green;
const LONGTERM: Color = Color::Magenta;

fn titled(title: &str, focused: bool) -> Block<'_> {
    let b = Block::default().borders(Borders::ALL).title(title);
    if focused {
        b.border_style(
            Style::default()
                .fg(Color::White)
                .add_modifier(Modifier::BOLD),
        )
    } else {
        b.border_style(Style::default().fg(Color::DarkGray))
    }
}

impl App {
    /// The pinning caller of stack `id` ([`caller`]), "?" until it is symbolized.
    fn caller_of(&self, id: i32) -> String {
        self.stacks
            .get(&id)
            .map(|f| caller(f).to_owned())
            .unwrap_or_else(|| "?".into())
    }

    fn render_header(&self, area: Rect, buf: &mut Buffer) {
        let h = &self.data.header;
        let mut spans = vec![
            Span::from("pintrace top").bold(),
            Span::from(format!(
                " │ {} │ up {:.1}s │ events {} │ ",
                h.kernel, h.uptime_s, h.events
            )),
        ];
        let lost: u64 = h.lost.iter().map(|(_, v)| v).sum();
        if lost > 0 || h.decode_errors > 0 {
            let detail: Vec<String> = h
                .lost
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .chain((h.decode_errors > 0).then(|| format!("undecodable={}", h.decode_errors)))
                .collect();
            spans.push(
                Span::from(format!("LOST {}", detail.join(" ")))
                    .fg(Color::White)
                    .bg(Color::Red)
                    .bold(),
            );
        } else {
            spans.push(Span::from("lost 0").fg(Color::Green));
        }
        if h.ended {
            spans.push(Span::from(" │ end of recording").fg(Color::Yellow));
        }
        let mut second = vec![
            Span::from(format!("{} │ ", h.mode)),
            Span::from(format!("plan: {}", h.plan)).fg(Color::DarkGray),
        ];
        if let Some(d) = &h.damage {
            second = vec![Span::from(format!("DAMAGED: {d}"))
                .fg(Color::White)
                .bg(Color::Red)];
        }
        Paragraph::new(vec![Line::from(spans), Line::from(second)]).render(area, buf);
    }

    fn render_rates(&self, area: Rect, buf: &mut Buffer) {
        let r = &self.data.rates;
        let series = |f: fn(&Rate) -> u64| -> Vec<(f64, f64)> {
            r.iter().map(|(t, r)| (*t, f(r) as f64)).collect()
        };
        let pin = series(|r| r.pin);
        let get = series(|r| r.get);
        let unpin = series(|r| r.unpin);
        let unget = series(|r| r.unget);
        let ymax = r
            .iter()
            .map(|(_, r)| r.pin.max(r.get).max(r.unpin).max(r.unget))
            .max()
            .unwrap_or(0);
        let now = r.last().map(|(t, _)| *t).unwrap_or(0.0);
        let latest = r.last().map(|(_, r)| *r).unwrap_or_default();
        let title = format!(
            "pages/s  pin {} unpin {} get {}",
            count(latest.pin),
            count(latest.unpin),
            count(latest.get)
        );
        let datasets = vec![
            dataset("pin", PIN, &pin),
            dataset("unpin", UNPIN, &unpin),
            dataset("get", GET, &get),
            dataset("unget", Color::Red, &unget),
        ];
        chart(datasets, &title, now, ymax, area, buf);
    }

    fn render_outstanding(&self, area: Rect, buf: &mut Buffer) {
        let o = &self.data.outstanding;
        let series =
            |i: usize| -> Vec<(f64, f64)> { o.iter().map(|(t, v)| (*t, v[i] as f64)).collect() };
        let pin = series(0);
        let lt = series(1);
        let get = series(2);
        let ymax = o
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .max()
            .unwrap_or(0);
        let now = o.last().map(|(t, _)| *t).unwrap_or(0.0);
        let n = self.data.outstanding_now;
        let title = format!(
            "outstanding  pin {} lt {} get {}",
            count(n[0]),
            count(n[1]),
            count(n[2])
        );
        let datasets = vec![
            dataset("pin", PIN, &pin),
            dataset("longterm", LONGTERM, &lt),
            dataset("get", GET, &get),
        ];
        chart(datasets, &title, now, ymax, area, buf);
    }

    /// The stacks view (`t`): every stack holding references, across all
    /// processes, as `run`'s top stacks table; the frames of the selected
    /// one are drawn beside the findings.
    fn render_all_stacks(&self, area: Rect, buf: &mut Buffer) {
        let rows = self.stack_rows();
        // Narrow: who and how much; then how spread and how old; then by kind.
        let medium = area.width >= 70;
        let wide = area.width >= 100;
        let mut head = vec!["STACK", "CALLER", "REFS"];
        let mut widths = vec![
            Constraint::Length(7),
            Constraint::Min(12),
            Constraint::Length(5),
        ];
        if wide {
            head.extend(["PIN", "LT", "GET"]);
            widths.extend([Constraint::Length(5); 3]);
        }
        if medium {
            head.extend(["HOLD", "FOLIOS"]);
            widths.extend([Constraint::Length(5), Constraint::Length(6)]);
        }
        head.push("OLDEST");
        widths.push(Constraint::Length(6));
        if medium {
            head.push("MEDIAN");
            widths.push(Constraint::Length(6));
        }
        head.push("PROCESSES");
        widths.push(Constraint::Min(if wide { 24 } else { 10 }));
        let table_rows: Vec<Row> = rows
            .iter()
            .map(|r| {
                let (id, name) = match r.stack_id {
                    None => ("-".into(), "(no stack)".into()),
                    Some(s) => (s.to_string(), self.caller_of(s)),
                };
                let mut cells = vec![Cell::from(id), Cell::from(name), Cell::from(count(r.refs))];
                if wide {
                    cells.extend(r.by_kind.iter().map(|&n| Cell::from(count(n))));
                }
                if medium {
                    cells.extend([Cell::from(count(r.holders)), Cell::from(count(r.folios))]);
                }
                cells.push(Cell::from(age(Some(r.oldest_age_ns))));
                if medium {
                    cells.push(Cell::from(age(Some(r.median_age_ns))));
                }
                let (mut procs, more) = r.process_labels();
                if more > 0 {
                    procs.push(format!("+{more}"));
                }
                cells.push(Cell::from(procs.join(" ")));
                Row::new(cells)
            })
            .collect();
        let refs: u64 = rows.iter().map(|r| r.refs).sum();
        let sort = match self.sort {
            super::SortKey::Oldest => "oldest",
            _ => "refs",
        };
        let title = format!("all stacks: {} ref(s) held, sort {sort}", count(refs));
        let block = titled(&title, self.focus == Focus::Holders);
        if rows.is_empty() {
            let inner = block.inner(area);
            block.render(area, buf);
            Paragraph::new("no references held")
                .fg(Color::Green)
                .render(inner, buf);
            return;
        }
        let table = Table::new(table_rows, widths)
            .header(Row::new(head).style(Style::default().add_modifier(Modifier::BOLD)))
            .block(block)
            .column_spacing(1)
            .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
        let mut state = TableState::default().with_selected(Some(self.holder_sel));
        StatefulWidget::render(table, area, buf, &mut state);
    }

    /// The frames of the stack selected in the stacks view, for the pane
    /// beside the findings.
    fn selected_stack_lines(&self) -> Option<(String, Vec<Line<'static>>)> {
        if self.focus != Focus::Holders {
            return None;
        }
        let r = self.selected_stack()?;
        let mut lines = Vec::new();
        let title = match r.stack_id {
            Some(id) => {
                match self.stacks.get(&id) {
                    Some(frames) if !frames.is_empty() => lines.extend(
                        frames
                            .iter()
                            .map(|fr| Line::from(format!("  {fr}")).fg(Color::Gray)),
                    ),
                    _ => lines.push(
                        Line::from(format!("  (stack {id} not available)")).fg(Color::DarkGray),
                    ),
                }
                format!("stack {id}: {} reference(s)", r.refs)
            }
            None => {
                lines.push(
                    Line::from("  (sampled out, --stacks none, or not stored)").fg(Color::DarkGray),
                );
                format!("no stack: {} reference(s)", r.refs)
            }
        };
        Some((title, lines))
    }

    fn render_holders(&self, area: Rect, buf: &mut Buffer) {
        if self.all_stacks {
            return self.render_all_stacks(area, buf);
        }
        let rows = self.holder_rows();
        let wide = area.width >= 70;
        let per_stack = self.expanded.is_some();
        let mut head = vec![
            if per_stack { "STACK" } else { "PID" },
            if per_stack { "CALLER" } else { "COMM" },
            "PIN",
        ];
        if wide {
            head.push("LT");
        }
        head.extend(["GET", "OLDEST", "RATE/s"]);
        if wide {
            head.push("TOTAL");
        }
        let table_rows: Vec<Row> = rows
            .iter()
            .map(|r| {
                let h = &r.held;
                let (id, name) = match r.stack_id {
                    Some(s) if s < 0 => (
                        "-".into(),
                        if s == pintrace_common::STACK_NOT_TAKEN {
                            "(stack sampled out)".into()
                        } else {
                            "(stack not stored)".into()
                        },
                    ),
                    Some(s) => (s.to_string(), self.caller_of(s)),
                    None => (r.tgid.to_string(), r.comm.clone()),
                };
                let mut cells = vec![
                    Cell::from(id),
                    Cell::from(name),
                    Cell::from(count(h.outstanding[0])),
                ];
                if wide {
                    cells.push(Cell::from(count(h.outstanding[1])));
                }
                cells.extend([
                    Cell::from(count(h.outstanding[2])),
                    Cell::from(age(h.oldest_age_ns)),
                    Cell::from(rate(h.rate)),
                ]);
                if wide {
                    cells.push(Cell::from(count(h.total_pages)));
                }
                Row::new(cells)
            })
            .collect();
        let name_w = if per_stack {
            Constraint::Min(16)
        } else {
            Constraint::Length(16)
        };
        let mut widths = vec![Constraint::Length(7), name_w, Constraint::Length(6)];
        if wide {
            widths.push(Constraint::Length(5));
        }
        widths.extend([
            Constraint::Length(5),
            Constraint::Length(6),
            Constraint::Length(6),
        ]);
        if wide {
            widths.push(Constraint::Length(7));
        }
        let title = match (
            self.expanded,
            self.editing_filter || !self.filter.is_empty(),
        ) {
            (Some(tgid), _) => {
                let comm = rows.first().map(|r| r.comm.as_str()).unwrap_or("");
                format!(
                    "holders of {tgid} ({comm}) by stack, sort {}",
                    self.sort.name()
                )
            }
            (None, true) => format!(
                "holders, sort {}, filter /{}{}",
                self.sort.name(),
                self.filter,
                if self.editing_filter { "_" } else { "" }
            ),
            (None, false) => format!("holders, sort {}", self.sort.name()),
        };
        let table = Table::new(table_rows, widths)
            .header(Row::new(head).style(Style::default().add_modifier(Modifier::BOLD)))
            .block(titled(&title, self.focus == Focus::Holders))
            .column_spacing(1)
            .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
        let mut state =
            TableState::default().with_selected((!rows.is_empty()).then_some(self.holder_sel));
        StatefulWidget::render(table, area, buf, &mut state);
    }

    fn render_lifetimes(&self, area: Rect, buf: &mut Buffer) {
        let l = &self.data.lifetime;
        let title = if l.count > 0 {
            format!(
                "lifetime p50 {} p99 {}",
                age(Some((l.p50_us * 1e3) as u64)),
                age(Some((l.p99_us * 1e3) as u64))
            )
        } else {
            "pin lifetime".into()
        };
        let block = titled(&title, false);
        let inner = block.inner(area);
        block.render(area, buf);
        let max = self.data.decades.iter().map(|d| d.1).max().unwrap_or(0);
        let bar_room = inner.width.saturating_sub(6 + 1 + 7) as u64;
        // Where they do not all fit, the empty decades at either end go.
        let decades = &self.data.decades;
        let mut shown = &decades[..];
        if shown.len() > inner.height as usize {
            let first = shown.iter().position(|d| d.1 > 0).unwrap_or(0);
            let last = shown.iter().rposition(|d| d.1 > 0).unwrap_or(0);
            shown = &shown[first..=last.max(first)];
        }
        let lines: Vec<Line> = shown
            .iter()
            .map(|(label, n)| {
                let len = if max == 0 {
                    0
                } else {
                    (n * bar_room).div_ceil(max)
                } as usize;
                Line::from(vec![
                    Span::from(format!("{label:>6} ")),
                    Span::from("█".repeat(len)).fg(PIN),
                    Span::from(format!(" {}", count(*n))),
                ])
            })
            .collect();
        if lines.is_empty() || l.count == 0 {
            Paragraph::new("no pin released yet")
                .fg(Color::DarkGray)
                .render(inner, buf);
        } else {
            Paragraph::new(lines).render(inner, buf);
        }
    }

    fn render_findings(&self, area: Rect, buf: &mut Buffer) {
        let [list_area, stack_area] =
            Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)])
                .areas(area);
        let d = &self.data;
        let title = format!(
            "findings {} ({} failing), newest first",
            d.findings_total, d.failures_total
        );
        let items: Vec<ListItem> = d
            .findings
            .iter()
            .map(|f| {
                let t = f.at_ns.saturating_sub(d.base_ns) as f64 / 1e9;
                let color = if f.kind.is_failure() {
                    Color::Red
                } else {
                    Color::Yellow
                };
                ListItem::new(Line::from(vec![
                    Span::from(format!("{t:>7.2}s ")),
                    Span::from(label(f.kind)).fg(color).bold(),
                    Span::from(format!(" {} ({}) {:#x}", f.tgid, f.comm, f.folio)),
                ]))
            })
            .collect();
        let empty = items.is_empty();
        let list = List::new(items)
            .block(titled(&title, self.focus == Focus::Findings))
            .highlight_style(Style::default().add_modifier(Modifier::REVERSED));
        let mut state = ListState::default().with_selected((!empty).then_some(self.finding_sel));
        if empty {
            let block = titled(&title, self.focus == Focus::Findings);
            let inner = block.inner(list_area);
            block.render(list_area, buf);
            Paragraph::new("no findings")
                .fg(Color::Green)
                .render(inner, buf);
        } else {
            StatefulWidget::render(list, list_area, buf, &mut state);
        }
        if let Some((title, lines)) = self.selected_stack_lines() {
            Paragraph::new(lines)
                .wrap(ratatui::widgets::Wrap { trim: false })
                .block(titled(&title, false))
                .render(stack_area, buf);
            return;
        }
        let selected = d.findings.get(self.finding_sel);
        let mut lines: Vec<Line> = Vec::new();
        if let Some(f) = selected {
            lines.push(Line::from(f.detail.clone()));
            match self.stacks.get(&f.stack_id) {
                Some(frames) if !frames.is_empty() => lines.extend(
                    frames
                        .iter()
                        .map(|fr| Line::from(format!("  {fr}")).fg(Color::Gray)),
                ),
                _ => lines.push(
                    Line::from(match crate::views::missing_stack(f.stack_id) {
                        Some(why) => format!("  ({why})"),
                        None => format!("  (stack {} not available)", f.stack_id),
                    })
                    .fg(Color::DarkGray),
                ),
            }
        }
        Paragraph::new(lines)
            .wrap(ratatui::widgets::Wrap { trim: false })
            .block(titled("stack of the selected finding", false))
            .render(stack_area, buf);
    }

    fn render_footer(&self, area: Rect, buf: &mut Buffer) {
        let keys = if self.editing_filter {
            "type to filter │ Enter keep │ Esc clear"
        } else if self.all_stacks {
            "q quit │ ↑↓ move │ t/Esc processes │ s sort │ Tab findings"
        } else if self.expanded.is_some() {
            "q quit │ ↑↓ move │ Enter/Esc back │ s sort │ Tab findings"
        } else {
            "q quit │ ↑↓ move │ Tab pane │ Enter stacks │ t all stacks │ s sort │ / filter"
        };
        Paragraph::new(Line::from(keys).fg(Color::Black).bg(Color::Gray)).render(area, buf);
    }
}

fn dataset<'a>(name: &'a str, color: Color, data: &'a [(f64, f64)]) -> Dataset<'a> {
    Dataset::default()
        .name(name)
        .marker(Marker::Braille)
        .graph_type(GraphType::Line)
        .style(Style::default().fg(color))
        .data(data)
}

/// The charts show the last minute, or the whole run when shorter.
const WINDOW_S: f64 = 60.0;

fn chart(datasets: Vec<Dataset>, title: &str, now: f64, ymax: u64, area: Rect, buf: &mut Buffer) {
    let x0 = (now - WINDOW_S).max(0.0);
    let x1 = now.max(x0 + 1.0);
    let ytop = (ymax as f64 * 1.1).max(1.0);
    Chart::new(datasets)
        .block(titled(title, false))
        .x_axis(
            Axis::default()
                .bounds([x0, x1])
                .labels([format!("{x0:.0}s"), format!("{x1:.0}s")])
                .style(Style::default().fg(Color::DarkGray)),
        )
        .y_axis(
            Axis::default()
                .bounds([0.0, ytop])
                .labels(["0".to_owned(), count(ymax)])
                .style(Style::default().fg(Color::DarkGray)),
        )
        .legend_position(Some(ratatui::widgets::LegendPosition::TopLeft))
        .hidden_legend_constraints((Constraint::Ratio(1, 2), Constraint::Ratio(1, 2)))
        .render(area, buf);
}

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let tall = area.height >= 40;
        let [header, charts, middle, findings, footer] = Layout::vertical([
            Constraint::Length(2),
            if tall {
                Constraint::Percentage(30)
            } else {
                Constraint::Length(7)
            },
            Constraint::Min(6),
            if tall {
                Constraint::Percentage(30)
            } else {
                Constraint::Length(7)
            },
            Constraint::Length(1),
        ])
        .areas(area);
        self.render_header(header, buf);
        let [rates, outstanding] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
                .areas(charts);
        self.render_rates(rates, buf);
        self.render_outstanding(outstanding, buf);
        let hist_w = if area.width >= 120 { 40 } else { 28 };
        let [holders, hist] =
            Layout::horizontal([Constraint::Min(40), Constraint::Length(hist_w)]).areas(middle);
        self.render_holders(holders, buf);
        self.render_lifetimes(hist, buf);
        self.render_findings(findings, buf);
        self.render_footer(footer, buf);
    }
}
