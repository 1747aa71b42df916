#[global_allocator]
static ALLOCATOR: attnflow::allocator::CacheLineAligned = attnflow::allocator::CacheLineAligned;

fn main() {
    match attnflow::cli::main() {
        Ok(code) => std::process::exit(code),
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::exit(1);
        }
    }
}
