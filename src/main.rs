//! The `landscaped` binary: parse arguments, set up logging, dispatch. Everything else lives in the library.
fn main() -> std::process::ExitCode {
    landscaped::cli::main()
}
