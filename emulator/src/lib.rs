//! Kubernetes API emulator.
