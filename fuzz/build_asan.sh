#!/usr/bin/env bash
# Build the C readers (registrar/_lane_c.c, sipcore/_digest_c.c, sipcore/_digest_hash_c.c, sipcore/_message_c.c,
# sipcore/_ownership_c.c, rating/_rater_c.c)
# with AddressSanitizer and UBSan into DIR, for `python -m fuzz.run lane|digest|parser|rater --asan DIR`
# run with LD_PRELOAD of gcc's libasan.so.
# Exit 2 (and build nothing) when gcc has no ASan runtime here.
set -euo pipefail
dir=${1:?usage: fuzz/build_asan.sh DIR}
py=${PYTHON:-python3}
cd "$(dirname "$0")/.."
[[ -e "$(gcc -print-file-name=libasan.so)" && "$(gcc -print-file-name=libasan.so)" == /* ]] || exit 2
mkdir -p "$dir"
include=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
suffix=$("$py" -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
for src in registrar/_lane_c.c sipcore/_digest_c.c sipcore/_digest_hash_c.c sipcore/_message_c.c sipcore/_ownership_c.c rating/_rater_c.c; do
  gcc -shared -fPIC -O1 -g -std=c11 -Wall -fsanitize=address,undefined -fno-sanitize-recover=undefined \
    -fno-omit-frame-pointer -I"$include" "$src" -o "$dir/$(basename "$src" .c)$suffix"
done
