//! ferrolb-config
