use which::which;

/// Rebuild the probes when bpf-linker changes, and say how to get it when absent.
/// The probes are built for BPF's v3 instruction set (every kernel from 5.12
/// runs it): the kernel books need its compare-and-swap.
fn main() {
    println!("cargo:rustc-link-arg=--cpu-features=+alu32");
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => println!("cargo:warning=bpf-linker not found: run `cargo xtask setup`"),
    }
}
