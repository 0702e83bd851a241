//! The files users hand to percyctl: plan files (`plan submit`) and definition manifests
//! (`apply`), both TOML or YAML. Parsing only; the subcommands turn them into requests.

pub mod document;
pub mod manifest;
pub mod plan;
