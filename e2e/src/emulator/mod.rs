//! The Kubernetes API emulator (see docs/testing.md).
