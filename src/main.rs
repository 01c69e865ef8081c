use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = agentfleet::cli::Cli::parse();
    match agentfleet::cli::run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}
