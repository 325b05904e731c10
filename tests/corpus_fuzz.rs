//! The fuzz target's body (fuzz/src/body.rs) run as an ordinary test over the
//! hostile corpus and the fuzz seeds, on stable Rust and without libFuzzer:
//! whatever `cargo fuzz run payload` checks, `cargo test` checks on these.

#[path = "../fuzz/src/body.rs"]
mod body;

use zonesync_e2e::corpus;

#[test]
fn fuzz_body_holds_its_invariants_over_the_corpus_and_seeds() {
    let now = chrono::Utc::now();
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for case in corpus::cases() {
        let p = corpus::payload(&case, now);
        // As the fuzzer sees it: on the default topic, and with the case's own topic in front.
        let mut with_topic = case.topic().as_bytes().to_vec();
        with_topic.push(b'\n');
        with_topic.extend_from_slice(&p);
        inputs.push(p);
        inputs.push(with_topic);
    }
    let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    let mut n_seeds = 0;
    for entry in std::fs::read_dir(&seeds).unwrap() {
        inputs.push(std::fs::read(entry.unwrap().path()).unwrap());
        n_seeds += 1;
    }
    assert!(n_seeds > 0, "no seeds in {}", seeds.display());
    for input in &inputs {
        body::check(input);
    }
    eprintln!(
        "fuzz body: {} inputs ({n_seeds} seeds) hold every invariant",
        inputs.len()
    );
}
