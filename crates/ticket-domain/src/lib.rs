//! The pure heart of ticketd: commands, events, the Decider, SLA policies and business calendars.
//!
//! Nothing here does I/O or reads a clock: the current instant arrives inside every command.

pub mod calendar;
pub mod ids;
pub mod severity;
pub mod policy;
