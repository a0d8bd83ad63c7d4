//! `pintrace top`: the live dashboard, over a tracing session or a replayed
//! recording. The terminal is restored on every way out: a normal quit, an
//! error, SIGTERM, and a panic (ratatui's panic hook).

use super::{
    signals::Stop,
    tracing::{open_source, pipeline_for, ReplayArgs, SessionArgs},
};
use crate::{
    exit::Exit,
    stream::pipeline::Pipeline,
    trace::source::{Batch, Source, Speed},
    views::top::{App, Data, Header},
};
use anyhow::{Context as _, Result};
use clap::Args;
use ratatui::{
    crossterm::event::{self, Event, KeyEvent, KeyEventKind},
    DefaultTerminal,
};
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};
use tokio::sync::mpsc;

#[derive(Args, Debug, Clone)]
pub struct TopArgs {
    /// Redraw this often: seconds, or with a unit (500ms, 2s), from 50ms to 1m.
    #[arg(long, value_name = "TIME", default_value = "1", value_parser = parse_interval, allow_hyphen_values = true)]
    pub interval: Duration,
    #[command(flatten)]
    pub replay: ReplayArgs,
    #[command(flatten)]
    pub session: SessionArgs,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = pintrace_engine::size::parse_duration(s)?;
    if !(Duration::from_millis(50)..=Duration::from_secs(60)).contains(&d) {
        return Err(format!("`{s}` must be from 50ms to 60 seconds"));
    }
    Ok(d)
}

pub fn run(args: &TopArgs, verbose: bool) -> Result<Exit> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    rt.block_on(async {
        let opts = args.session.options(verbose, false);
        // Start-up errors are printed on a normal terminal.
        let mut source = open_source(&args.replay, Speed::Recorded, opts, None, "top")?;
        let mut pipeline = pipeline_for(&source, args.session.leak_age);
        let mut terminal = ratatui::try_init().context("setting up the terminal")?;
        let result = dashboard(&mut terminal, &mut source, &mut pipeline, args).await;
        ratatui::restore();
        result?;
        if let Some(damage) = source.damage() {
            eprintln!("pintrace: error: {damage}");
            return Ok(Exit::Error);
        }
        Ok(Exit::Ok)
    })
}

enum Input {
    Key(KeyEvent),
    Resize,
}

/// Reads the terminal's events on a thread of its own until `stop`.
fn read_input(stop: Arc<AtomicBool>) -> mpsc::UnboundedReceiver<Input> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match event::poll(Duration::from_millis(100)) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(_) => break,
            }
            let input = match event::read() {
                Ok(Event::Key(k)) if k.kind == KeyEventKind::Press => Input::Key(k),
                Ok(Event::Resize(..)) => Input::Resize,
                Ok(_) => continue,
                Err(_) => break,
            };
            if tx.send(input).is_err() {
                break;
            }
        }
    });
    rx
}

fn refresh(app: &mut App, source: &Source, pipeline: &Pipeline, ended: bool) {
    let meta = source.meta();
    let lost = source.lost().unwrap_or_default();
    let header = Header {
        kernel: meta.kernel.clone(),
        plan: meta.plan.clone(),
        mode: meta.mode.clone(),
        uptime_s: pipeline.model.uptime_s(),
        events: pipeline.ledger.tally.events,
        lost: lost
            .into_iter()
            .filter(|(_, v)| *v > 0)
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        decode_errors: pipeline.decode_errors,
        ended,
        damage: source
            .damage()
            .filter(|_| ended)
            .map(|d| format!("read up to byte {}: {}", d.offset, d.what)),
    };
    app.refresh(Data::collect(&pipeline.model, &pipeline.ledger, header));
    for id in app.missing_stacks() {
        app.stacks.insert(id, source.stack(id));
    }
}

async fn dashboard(
    terminal: &mut DefaultTerminal,
    source: &mut Source,
    pipeline: &mut Pipeline,
    args: &TopArgs,
) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut input = read_input(stop.clone());
    // Any polite way to end the process restores the terminal: SIGTERM,
    // SIGINT sent from elsewhere (Ctrl-C itself arrives as a key), and
    // SIGHUP when the terminal goes away.
    let mut signals = Stop::with_hangup()?;
    let mut redraw = tokio::time::interval(args.interval);
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let live = source.is_live();
    let mut app = App::new();
    let mut found = Vec::new();
    let mut ended = false;
    let result = loop {
        let mut draw = false;
        tokio::select! {
            b = source.next_batch(pipeline, &mut found), if !ended => match b {
                Ok(Batch::End) => {
                    // As `run --replay` does at the end: what is still held.
                    pipeline.finish(source.now_ns(), &mut found);
                    ended = true;
                    draw = true;
                }
                Ok(Batch::Records(_)) => {}
                Err(e) => break Err(e),
            },
            _ = ticker.tick(), if live => source.tick(pipeline, &mut found)?,
            _ = redraw.tick() => draw = true,
            i = input.recv() => match i {
                Some(Input::Key(k)) => {
                    app.handle_key(k);
                    draw = true;
                }
                Some(Input::Resize) => draw = true,
                None => break Ok(()),
            },
            _ = signals.recv() => break Ok(()),
        }
        // The model keeps the findings; the dashboard draws them from there.
        found.clear();
        if app.quit {
            break Ok(());
        }
        if draw {
            refresh(&mut app, source, pipeline, ended);
            if let Err(e) = terminal.draw(|f| f.render_widget(&app, f.area())) {
                break Err(anyhow::Error::new(e).context("drawing the dashboard"));
            }
        }
    };
    stop.store(true, Ordering::Relaxed);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_is_checked() {
        assert!(parse_interval("0").is_err());
        assert!(parse_interval("61").is_err());
        assert!(parse_interval("x").unwrap_err().contains("`x`"));
        assert_eq!(parse_interval("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("250ms"), Ok(Duration::from_millis(250)));
    }
}
