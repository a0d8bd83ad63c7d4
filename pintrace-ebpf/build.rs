use which::which;

/// Rebuild the probes when bpf-linker changes, and say how to get it when absent.
/// The probes are built with BPF's 32-bit subregisters (`alu32`): only then
/// does LLVM emit `BPF_CMPXCHG` (an atomic of 5.12 on), which the kernel
/// books' compare-and-swap needs.
fn main() {
    println!("cargo:rustc-link-arg=--cpu-features=+alu32");
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => println!("cargo:warning=bpf-linker not found: run `cargo xtask setup`"),
    }
}
