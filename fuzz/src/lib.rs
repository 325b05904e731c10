//! The fuzz body, kept apart from the libFuzzer entry point so the same code
//! also runs as an ordinary test over the seed corpus (tests/corpus_fuzz.rs
//! includes `body.rs`), on stable Rust and without libFuzzer.

mod body;

pub use body::check;
