use std::process::ExitCode;

fn main() -> ExitCode {
    keysmith::cli::main()
}
