//! The `wxauth` binary: everything lives in the library; see `wxauth --help`.

fn main() -> std::process::ExitCode {
    wxauth::cli::main()
}
