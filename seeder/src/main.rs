//! The `seeder` binary: parses arguments and reports errors; everything else is in the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    seeder::cli::init_tracing();
    match seeder::cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // A closed pipe (`seeder ls | head`) is not a failure.
            if err
                .chain()
                .filter_map(|e| e.downcast_ref::<std::io::Error>())
                .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("seeder: {err:#}");
            ExitCode::from(2)
        }
    }
}
