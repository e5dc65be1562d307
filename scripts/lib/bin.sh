# shellcheck shell=bash
# Shared by scripts/*: where `cargo build --release` puts the dtq binary.
# Source it. Cargo decides the target directory (CARGO_TARGET_DIR,
# build.target-dir in a .cargo/config.toml, a workspace above...), so it is
# asked: `cargo metadata --no-deps` reads the manifest and compiles nothing.

# dtq_bin: prints the path of the release dtq binary (built or not).
dtq_bin() {
  local root dir
  command -v cargo >/dev/null || { echo "dtq_bin: cargo not found: install the Rust toolchain" >&2; return 1; }
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  # (cargo prints its own error; the JSON parse of nothing stays quiet)
  dir=$(cd "$root" && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null) || {
    echo "dtq_bin: cargo metadata failed in $root" >&2
    return 1
  }
  echo "$dir/release/dtq"
}
