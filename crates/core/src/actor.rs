//! actor (in progress)
