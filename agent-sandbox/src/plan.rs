//! Plan: every layer's compiled artifact plus merged `Coverage`; the one fail-closed check.
