//! Views: what a person or a program reads. Pure: each takes a value and
//! returns text; the commands decide where it goes.

pub mod check;
pub mod doctor;
pub mod events;
pub mod findings;
pub mod junit;
pub mod summary;
pub mod top;
