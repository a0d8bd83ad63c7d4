//! The tracing session: start-up ([`startup`]) turns the kernel's
//! capabilities into an attach [`plan`], [`probes`] loads and attaches it
//! (the only module that touches aya), a [`session`] watches the ring buffer,
//! and a [`source`] hands its records, or a [`record`]ing's, to the stream;
//! with the kernel books on, [`books`] reads their counts and snapshots.

pub mod books;
pub mod plan;
pub mod probes;
pub mod record;
pub mod session;
pub mod source;
pub mod startup;
