//! `agentbox run` end to end.
