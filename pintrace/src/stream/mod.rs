//! The event stream: ring-buffer records decoded into [`events`], and the
//! [`pipeline`] that feeds them to the ledger and the model, the same for a
//! live run, a replay, the tests and the fuzz targets.

pub mod events;
pub mod pipeline;
