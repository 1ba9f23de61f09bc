//! lww (in progress)
