#!/usr/bin/env bash
# Prints the path of TCMalloc (gperftools' libtcmalloc_minimal), for LD_PRELOAD, or
# nothing when it cannot be had; never fails.
#
# Why: the CPU-scale runs allocate and free the same multi-megabyte activations every
# step (the logits of a batch-64 step are 9 MB). glibc's malloc hands such blocks back to
# the kernel and faults fresh zeroed pages in on the next step; TCMalloc keeps them. A
# batch-64 run trains 10-20 % faster with it here, and computes the same numbers bit for
# bit: PyTorch aligns every CPU tensor to 64 bytes whichever allocator is below it
# (tests/workflow/test_allocator.py). PyTorch's CPU tuning guide recommends the same.
#
# On a machine without it, as root with apt-get, it installs Debian's
# libtcmalloc-minimal4 (about 1 MB) once. PNE_ALLOCATOR=system prints nothing: the
# study then runs on glibc's malloc, as fast as before and to the same numbers.
set -u
[ "${PNE_ALLOCATOR:-tcmalloc}" = system ] && exit 0
find_library() {
    for dir in /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib64 /usr/lib; do
        if [ -e "$dir/libtcmalloc_minimal.so.4" ]; then
            echo "$dir/libtcmalloc_minimal.so.4"
            return 0
        fi
    done
    return 1
}
find_library && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    echo "allocator.sh: installing libtcmalloc-minimal4 (apt-get), a faster malloc for the runs" >&2
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        libtcmalloc-minimal4 > /dev/null 2>&1; then
        apt-get update -qq > /dev/null 2>&1
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            libtcmalloc-minimal4 > /dev/null 2>&1
    fi
    find_library && exit 0
fi
echo "allocator.sh: no libtcmalloc_minimal.so.4; the runs use glibc's malloc (same numbers, slower)" >&2
exit 0
