//! ferrolb-speaker
