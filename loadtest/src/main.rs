//! `loadtest`: the load generator's command line (thin; everything is in `noc_loadtest`).

use anyhow::{Context, Result};
use clap::Parser;
use noc_loadtest::cli::{Cli, Command, merge_files, write_outputs};

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let opts = args.options()?;
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = args.threads {
                rt.worker_threads(n.max(1));
            }
            let rt = rt.enable_all().build().context("starting the runtime")?;
            let Some(result) = rt.block_on(noc_loadtest::run(opts))? else {
                return Ok(());
            };
            let html = args.html_path();
            write_outputs(&result, &args.out, Some(&html))?;
            print!("{}", result.summary());
            println!("results: {} and {}", args.out.display(), html.display());
            // Sessions still closing must not delay the exit.
            rt.shutdown_background();
        }
        Command::Peer(args) => {
            let opts = args.options()?;
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = args.threads {
                rt.worker_threads(n.max(1));
            }
            let rt = rt.enable_all().build().context("starting the runtime")?;
            let result = rt.block_on(noc_loadtest::peer::run_peer(opts))?;
            let html = args.html_path();
            write_outputs(&result, &args.out, Some(&html))?;
            print!("{}", result.summary());
            println!("results: {} and {}", args.out.display(), html.display());
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
