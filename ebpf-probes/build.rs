//! Compiles `src/bpf/agentbox.bpf.c` (C, CO-RE) into one BPF object and its libbpf skeleton.
//!
//! clang: `$AGENTBOX_CLANG`, else `clang-16` if it is on PATH, else `clang`. libbpf-cargo adds
//! `-I` for the libbpf headers (bpf_helpers.h, ...) that libbpf-sys vendors, plus
//! `-D__TARGET_ARCH_*` for the target architecture.

use std::env;
use std::path::{Path, PathBuf};
use std::process::exit;

use libbpf_cargo::SkeletonBuilder;
use sha2::Digest;

const BPF_DIR: &str = "src/bpf";
const SOURCE: &str = "src/bpf/agentbox.bpf.c";

fn main() {
    println!("cargo:rerun-if-env-changed=AGENTBOX_CLANG");
    println!("cargo:rerun-if-changed={BPF_DIR}");
    for source in bpf_sources() {
        println!("cargo:rerun-if-changed={}", source.display());
    }

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = choose_clang();
    let result = SkeletonBuilder::new()
        .source(SOURCE)
        .obj(out_dir.join("agentbox.bpf.o"))
        .clang(&clang)
        .clang_args(["-Wall", "-Werror", "-mcpu=v3", "-I", BPF_DIR])
        .build_and_generate(out_dir.join("agentbox.skel.rs"));

    if let Err(err) = result {
        // `{:#}` prints the whole context chain, which ends in clang's own stderr.
        eprintln!("error: building the eBPF object failed:\n{err:#}");
        eprintln!(
            "hint: fix the C error above; if `{}` itself is missing or lacks the BPF target, \
             `apt-get install clang-16` or set AGENTBOX_CLANG=/path/to/clang",
            clang.display()
        );
        exit(1);
    }
    // The pin directory's name (`runtime::object_version`): hashed here, not on every run.
    let object = std::fs::read(out_dir.join("agentbox.bpf.o")).expect("the object just built");
    let digest = sha2::Sha256::digest(&object);
    std::fs::write(out_dir.join("object_version"), hex::encode(&digest[..8]))
        .expect("writing object_version");
}

/// Every file under src/bpf that can affect the object: the source and the headers it includes.
fn bpf_sources() -> Vec<PathBuf> {
    let mut sources: Vec<PathBuf> = std::fs::read_dir(BPF_DIR)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "c" || ext == "h"))
                .collect()
        })
        .unwrap_or_default();
    sources.sort();
    sources
}

fn choose_clang() -> PathBuf {
    if let Some(clang) = env::var_os("AGENTBOX_CLANG").filter(|value| !value.is_empty()) {
        return PathBuf::from(clang);
    }
    if on_path("clang-16") {
        return PathBuf::from("clang-16");
    }
    PathBuf::from("clang")
}

fn on_path(program: &str) -> bool {
    env::var_os("PATH")
        .is_some_and(|path| env::split_paths(&path).any(|dir| is_executable(&dir.join(program))))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}
