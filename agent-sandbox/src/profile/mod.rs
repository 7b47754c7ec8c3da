//! Profiles: TOML files (built-in, user, `extends`) in, a validated `Policy` out.
