//! pgcluster
