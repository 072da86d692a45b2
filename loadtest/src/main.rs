//! `loadtest`: the load generator's command line (thin; everything is in `noc_loadtest`).

use anyhow::{Context, Result};
use clap::Parser;
use noc_loadtest::cli::{Cli, Command, merge_files};

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let opts = args.options()?;
            let rt = args.output.runtime().context("starting the runtime")?;
            if let Some(result) = rt.block_on(noc_loadtest::run(opts))? {
                args.output.finish(&result)?;
            }
            // Sessions still closing must not delay the exit.
            rt.shutdown_background();
        }
        Command::Peer(args) => {
            let opts = args.options()?;
            let rt = args.output.runtime().context("starting the runtime")?;
            let result = rt.block_on(noc_loadtest::peer::run_peer(opts))?;
            args.output.finish(&result)?;
            rt.shutdown_background();
        }
        Command::Merge { inputs, out, html } => {
            let merged = merge_files(&inputs, &out, html.as_deref())?;
            print!("{}", merged.summary());
            println!("merged {} results into {}", inputs.len(), out.display());
        }
        Command::Report { input, html } => {
            let result = noc_loadtest::RunResult::load(&input)?;
            std::fs::write(&html, noc_loadtest::html::render(&result)?)
                .with_context(|| format!("writing {}", html.display()))?;
        }
    }
    Ok(())
}
