#!/usr/bin/env bash
# The `cuda` feature on a real GPU, in one short run of prebuilt binaries (the GPU machine
# needs no Rust toolchain): the CUDA tests (fake-driver and real-driver ones) and the example
# that fills the README's table. About a minute of GPU time; the run command allows 5.
#
# 1. Here, on the development machine (x86_64 Linux), from the repository root:
#
#        bash gpu/check.sh prepare
#
#    builds, with --release and --features cuda, the example and the test binary of
#    tests/cuda.rs, plus the fake driver, and copies them into .gpu-bin/ (ignored by git).
#
# 2. On the GPU machine, with the device tool, from the repository root:
#
#        run  command: "bash gpu/check.sh"   carry: [".gpu-bin"]   timeout_s: 300
#
#    It prints the machine, the test results and the example's table, and leaves the same
#    output in $OUT/check.txt. It exits non-zero if a test or the example's GPU check fails,
#    and if there is no usable GPU: it sets UNIMEM_REQUIRE_GPU=1, which turns the skips of the
#    gpu_ tests and of the example into failures (.ci/run checks that, with no driver, this
#    script fails).
set -uo pipefail
cd "$(dirname "$0")/.."
bin=.gpu-bin

if [ "${1:-}" = prepare ]; then
    set -e
    cargo build --release --features cuda --example cuda
    tests=$(cargo test --release --no-run --features cuda --test cuda --message-format=json |
        sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
    cargo build --release -p fake-cuda
    rm -rf "$bin" && mkdir -p "$bin"
    cp target/release/examples/cuda "$bin/cuda-example"
    cp "$tests" "$bin/cuda-tests"
    cp target/release/libfake_cuda.so "$bin/"
    strip --strip-debug "$bin/cuda-example" "$bin/cuda-tests" 2>/dev/null || true
    du -sh "$bin"/*
    echo "ready: now run \`bash gpu/check.sh\` on the GPU machine with carry [\"$bin\"]"
    exit 0
fi

check() {
    for file in cuda-example cuda-tests libfake_cuda.so; do
        [ -e "$bin/$file" ] || { echo "$bin/$file is missing: run \`bash gpu/check.sh prepare\` first"; return 2; }
    done

    echo "=== machine"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "no nvidia-smi"
    echo "kernel $(uname -r), $(nproc) CPUs, $(ldd --version | head -n 1)"
    # The driver is usually on the loader's path; if not, point the tests and the example at it
    # (they open it with the unsafe Driver::load_from_env; the safe Driver::load never reads
    # the variable).
    local on_path= dir
    ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 ' && on_path=yes
    IFS=: read -ra dirs <<<"${LD_LIBRARY_PATH:-}"
    for dir in "${dirs[@]}"; do [ -e "$dir/libcuda.so.1" ] && on_path=yes; done
    if [ -z "$on_path" ]; then
        for dir in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/cuda/compat; do
            if [ -e "$dir/libcuda.so.1" ]; then
                export UNIMEM_CUDA_DRIVER="$dir/libcuda.so.1"
                echo "libcuda.so.1 is not on the loader's path: UNIMEM_CUDA_DRIVER=$UNIMEM_CUDA_DRIVER"
                break
            fi
        done
    fi
    ldd "$bin/cuda-tests" | grep 'not found' && echo "the binaries need libraries this machine lacks"

    export UNIMEM_FAKE_CUDA="$PWD/$bin/libfake_cuda.so"
    # No GPU is a failure here, not a skip: this is the check that the GPU works.
    export UNIMEM_REQUIRE_GPU=1
    status=0
    echo
    echo "=== tests/cuda.rs (the gpu_ tests use the real driver; the others the fake)"
    timeout 120 "$bin/cuda-tests" --test-threads=4 || status=1
    echo
    echo "=== the gpu_ tests again, alone, with their output"
    timeout 60 "$bin/cuda-tests" gpu_ --nocapture --test-threads=1 || status=1

    echo
    echo "=== examples/cuda.rs, 1 GiB"
    timeout 180 "$bin/cuda-example" || status=1
    echo
    echo "=== done: $([ $status = 0 ] && echo 'all passed' || echo 'FAILURES above')"
    return $status
}

check 2>&1 | tee "${OUT:-/tmp}/check.txt"
exit "${PIPESTATUS[0]}"
