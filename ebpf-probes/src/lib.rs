//! agentbox's kernel programs.
