#!/usr/bin/env bash
# Here, where the package registries answer: the wheels of benchmarks/gpu/requirements.txt for the device machine's
# Python 3.12 into .whl/ (ignored by git; the device tool takes it with carry=[".whl"]). About 47 MB; the working tree
# is about 12 MB, under the tool's 64 MiB together.
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .whl && mkdir .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl -r benchmarks/gpu/requirements.txt 2>&1 | grep -v '^WARNING: Location' || true
echo "$(ls .whl | wc -l) wheels, $(du -sh .whl | cut -f1) in .whl (expected: $(grep -c '==' benchmarks/gpu/requirements.txt))"
