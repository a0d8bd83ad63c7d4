//! Views: what a person or a program reads. Pure: each takes a value and
//! returns text; the commands decide where it goes.

pub mod check;
pub mod doctor;
pub mod events;
pub mod findings;
pub mod interval;
pub mod junit;
pub mod ktap;
pub mod metrics;
pub mod summary;
pub mod top;

/// Why an event has no kernel stack, from its `stack_id`; `None` for a
/// stack id that names one.
pub fn missing_stack(stack_id: i32) -> Option<&'static str> {
    match stack_id {
        pintrace_common::STACK_NOT_TAKEN => {
            Some("no stack: sampled out (--stacks sampled; --stacks all takes every one)")
        }
        id if id < 0 => Some("no stack: the probe could not store it (stack map full)"),
        _ => None,
    }
}
