//! libFuzzer entry point: every input goes through the decoder and the
//! validator exactly as the aggregator runs them (see `src/body.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zonesync_fuzz::check(data);
});
