//! ferrolb-e2e
