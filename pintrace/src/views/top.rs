//! `pintrace top`: the dashboard; its state and keys (`app`) apart from its drawing (`ui`).
//!
//! [`App`] (`app`) is a plain struct: making one touches no kernel and no
//! terminal; it is filled from the [`Model`](crate::model::Model) by
//! [`App::refresh`] and changed by [`App::handle_key`]. `ui` draws it
//! (`impl Widget for &App`) with no I/O and no lock. The command
//! (`cmd::top`) owns the terminal and the record source.

mod app;
mod ui;

pub use app::{App, Data, Focus, Header, HolderRow, SortKey};
pub use ui::caller;

#[cfg(test)]
mod tests;
