fn main() {
    // The sandbox helper must run before any thread exists (it forks and enters namespaces).
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == agentfleet::sandbox::HELPER_ARG)
    {
        agentfleet::sandbox::helper_main();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(2);
        }
    };
    let cli = agentfleet::cli::parse_args();
    if !cli.runs_a_service() {
        // A command whose reader went away (`logs --json | head`) ends quietly, as other
        // command-line tools do, instead of panicking in println!. Services keep Rust's
        // ignored SIGPIPE: a write to a gone peer is an error they handle.
        // SAFETY: no thread of ours writes yet; SIG_DFL is a valid disposition.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match runtime.block_on(agentfleet::cli::run(cli)) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}
