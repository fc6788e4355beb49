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
            // Skip the silent context lines that only carry the exit code, and a cause its
            // error already said (many errors show their source, and also return it).
            let mut msg: Vec<String> = Vec::new();
            for line in err.chain().map(|e| e.to_string()) {
                if line.is_empty() || msg.last().is_some_and(|last| last.contains(&line)) {
                    continue;
                }
                msg.push(line);
            }
            eprintln!("seeder: {}", msg.join(": "));
            ExitCode::from(seeder::cli::exit_code(&err))
        }
    }
}
