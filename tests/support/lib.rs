//! Shared helpers for agentbox integration tests.
