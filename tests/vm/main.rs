//! VM tier.
