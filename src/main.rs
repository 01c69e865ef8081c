use clap::Parser;

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
    let cli = agentfleet::cli::Cli::parse();
    match runtime.block_on(agentfleet::cli::run(cli)) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}
