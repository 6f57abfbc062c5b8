# Sourced by the device scripts that run after `run_engine_on_device.sh stash`
# (run_eval_on_device.sh, run_generate_on_device.sh), from the repository root.
# device_stage: unpacks the staged binaries into /root/stage (unless already there), joins
# the model from part 1 (stashed) and part 2 (carried in .stage/model/2), checks its
# SHA-256, and puts the binaries' libraries and cuBLAS on LD_LIBRARY_PATH. Returns 1, saying
# why, when the model is missing or its checksum does not match.
stash=/root/stage
name=SmolLM2-135M-Instruct.Q4_1.gguf
device_stage() {
  mkdir -p "$stash"
  [ -x "$stash/bin/sinkrouter" ] || tar -xJf .stage/engine/bin.tar.xz -C "$stash"
  if [ ! -f "$stash/$name" ] && [ -f "$stash/$name.part1" ] && [ -f ".stage/model/2/$name.part2" ]; then
    cat "$stash/$name.part1" ".stage/model/2/$name.part2" >"$stash/$name" && cp ".stage/model/2/$name.sha256" "$stash/"
  fi
  if ! (cd "$stash" && sha256sum -c --status "$name.sha256" 2>/dev/null); then
    echo "model missing or checksum mismatch in $stash"
    return 1
  fi
  local cublas
  cublas=$(find -L /usr/local/cuda/lib64 $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null) \
    -maxdepth 5 -name 'libcublasLt.so.13*' 2>/dev/null | head -1)
  export LD_LIBRARY_PATH=$stash/lib:/usr/local/cuda/lib64:$(dirname "${cublas:-/x/x}"):${LD_LIBRARY_PATH:-}
}
