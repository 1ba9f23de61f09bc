//! Tidy checks live in `tests/tidy.rs`: they read the workspace's own source files and fail
//! when an invariant of ARCHITECTURE.md stops holding. This library is empty on purpose.
