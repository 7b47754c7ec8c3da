//! The guest is what the tier needs.
