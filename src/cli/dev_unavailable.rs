//! `keysmith dev` in a build without the `dev` feature (the release binary and the image, which
//! leave the API emulator out): says how to get it instead of failing as an unknown command.

use std::process::ExitCode;

use clap::Args;

/// Whatever `keysmith dev` would take; none of it is used here.
#[derive(Args, Debug)]
pub struct DevArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    _ignored: Vec<String>,
}

/// Explain that this build has no emulator.
pub fn run(_: DevArgs) -> ExitCode {
    eprintln!(
        "keysmith dev: this build leaves out the embedded API emulator (built without the `dev` \
         feature, as the release image is); run it from a clone with `cargo run --release -- dev`, \
         or build with `cargo build --release --features dev`"
    );
    ExitCode::from(2)
}
