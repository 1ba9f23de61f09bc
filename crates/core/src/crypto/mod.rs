//! Crypto formats (in progress)
