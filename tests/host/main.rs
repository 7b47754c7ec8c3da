//! Host tier.
