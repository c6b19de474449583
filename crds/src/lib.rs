//! ferrolb-crds
