//! The AFL++ driver: `percy-fuzz TARGET` reads inputs as AFL hands them over and runs the
//! target on each (see `tests/fuzz/README.md` for the commands).

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(target) = percy_fuzz::target(&name) else {
        let names: Vec<&str> = percy_fuzz::TARGETS.iter().map(|t| t.name).collect();
        eprintln!("usage: percy-fuzz TARGET   (one of: {})", names.join(", "));
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| {
        (target.run)(data);
    });
}
