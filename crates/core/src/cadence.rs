//! cadence (in progress)
