//! ferrolb-controller
