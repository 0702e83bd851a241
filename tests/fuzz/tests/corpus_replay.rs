//! The short fuzz run CI does: every stored input of every target (the corpus the fuzzer
//! grew, and `regressions/`: inputs that once crashed, each kept as a regression test), then
//! a few thousand seeded mutations of them. A panic fails the test; the long, coverage-guided
//! run is `cargo afl fuzz` (see `tests/fuzz/README.md`).

use std::path::Path;

use percy_files::document::Format;
use percy_files::manifest::Manifest;
use percy_files::plan::PlanFile;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Mutated inputs per target: seconds in a debug build.
const MUTATIONS_PER_TARGET: usize = 2_000;

fn inputs(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|path| std::fs::read(path).ok())
        .collect()
}

/// One of AFL's havoc-style edits: flip a bit, set a byte, cut, duplicate or splice.
fn mutate(rng: &mut StdRng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut bytes = input.to_vec();
    for _ in 0..rng.gen_range(1..=4) {
        let len = bytes.len();
        match rng.gen_range(0..6) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                bytes[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                bytes[i] = [0, 0xff, 0x7f, 0x80, 1][rng.gen_range(0..5)];
            }
            2 if len > 0 => bytes.truncate(rng.gen_range(0..len)),
            3 if len > 0 => {
                let i = rng.gen_range(0..len);
                let chunk = bytes[i..].iter().take(16).copied().collect::<Vec<_>>();
                bytes.splice(i..i, chunk);
            }
            4 if !other.is_empty() => {
                let cut = rng.gen_range(0..=len);
                let from = rng.gen_range(0..other.len());
                bytes.truncate(cut);
                bytes.extend_from_slice(&other[from..]);
            }
            _ => bytes.push(rng.gen()),
        }
    }
    bytes
}

#[test]
fn every_target_survives_its_corpus_and_mutations_of_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for target in percy_fuzz::TARGETS {
        let mut stored = inputs(&root.join("corpus").join(target.name));
        stored.extend(inputs(&root.join("regressions").join(target.name)));
        assert!(
            !stored.is_empty(),
            "no corpus for target {} (run percy-fuzz-seeds)",
            target.name
        );
        for input in &stored {
            (target.run)(input);
        }
        let mut rng = StdRng::seed_from_u64(0x5eed_f022);
        for _ in 0..MUTATIONS_PER_TARGET {
            let input = &stored[rng.gen_range(0..stored.len())];
            let other = &stored[rng.gen_range(0..stored.len())];
            (target.run)(&mutate(&mut rng, input, other));
        }
    }
}

#[test]
fn the_seeds_are_accepted_by_their_decoders() {
    // A seed that does not decode teaches the fuzzer nothing about the format.
    use percy_fuzz::seeds;
    for (target, inputs) in seeds::all() {
        for (name, bytes) in inputs {
            assert!(!bytes.is_empty(), "seed {name} of {target} is empty");
        }
    }
    let of = |target: &str| -> Vec<Vec<u8>> {
        seeds::all()
            .into_iter()
            .find(|(t, _)| *t == target)
            .map(|(_, inputs)| inputs.into_iter().map(|(_, bytes)| bytes).collect())
            .unwrap_or_default()
    };
    let image = of("state_image").remove(0);
    assert!(percy_statemachine::StateMachine::restore(&image).is_ok());
    for file in of("backup") {
        let backup = percy_proto::backup::decode(&file[1..]).expect("a backup seed decodes");
        assert!(percy_statemachine::StateMachine::restore(backup.image).is_ok());
    }
    let text = |seed: &[u8]| {
        let format = if seed[0] & 1 == 0 {
            Format::Toml
        } else {
            Format::Yaml
        };
        (
            String::from_utf8(seed[1..].to_vec()).expect("UTF-8"),
            format,
        )
    };
    for seed in of("plan") {
        let (text, format) = text(&seed);
        let plan = PlanFile::parse(&text, format).expect("a plan seed parses");
        assert_eq!(plan.tasks.len(), 2);
    }
    for seed in of("manifest") {
        let (text, format) = text(&seed);
        assert!(Manifest::parse(&text, format).is_ok(), "{text}");
    }
}
