fn main() -> std::process::ExitCode {
    chainwatch::cmd::main()
}
