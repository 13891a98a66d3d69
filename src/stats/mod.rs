//! Weight statistics: per-tensor moments and histograms, per-checkpoint norms, distances and update
//! cosines. Plain numbers in, plain numbers out: no I/O, no store.
