//! `agentbox doctor`: what this kernel and these privileges let agentbox guarantee, and why.
