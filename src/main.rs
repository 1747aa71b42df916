use std::io::Write;

#[global_allocator]
static ALLOCATOR: attnflow::allocator::CacheLineAligned = attnflow::allocator::CacheLineAligned;

fn main() {
    match attnflow::cli::main() {
        Ok(code) => std::process::exit(code),
        Err(error) => {
            // Not `eprintln!`, which panics when stderr is a pipe whose reader has gone.
            // The exit status still reports the failure.
            let _ = writeln!(std::io::stderr(), "error: {error:#}");
            std::process::exit(1);
        }
    }
}
