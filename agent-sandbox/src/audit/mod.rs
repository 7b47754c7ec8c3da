//! Audit: one `Event` type, sources push, sinks consume. Sinks never know about layers.

pub mod event;

pub use event::{Action, Denial, Event, Object, Record, SCHEMA_VERSION};
