//! The privdistill command line: parses arguments and calls one library function.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "privdistill", version, about = "Privacy Distillation for medical text-to-image diffusion models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Report the version, CPU, SIMD features and CUDA status.
    Doctor,
    /// Run the whole pipeline on the shipped chest X-ray data.
    Demo,
    /// Datasets: split by patient, import, generate phantoms, summarise.
    Data(Box<privdistill::data::cli::DataArgs>),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Doctor => {
            print!("{}", privdistill::doctor::report());
            Ok(())
        }
        Command::Demo => Err(anyhow::anyhow!(
            "demo: the pipeline is not built yet. When it is, `demo` will train a VAE and a latent diffusion model on \
             assets/cxr-real-a, sample 10 images per prompt, score them with a re-identification network, filter, train the \
             distilled model and write a report. Today only the tensor runtime exists (see `privdistill doctor`)."
        )),
        Command::Data(args) => privdistill::data::cli::run(*args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
